//! The Stratum front end (EthProxy dialect: newline-delimited JSON-RPC over TCP): the accept
//! loop with a connection cap, and each connection's read/answer/push loop with a line-length
//! limit and an idle timeout.

pub mod message;
pub mod method;
pub mod nicehash;
pub mod nicehash_server;
pub mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::Context;
use message::{Request, Response, MALFORMED_REQUEST, REQUEST_TOO_LARGE};
use session::Session;

/// How long shutdown waits for connections to finish their request in hand.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Stratum limits.
#[derive(Clone, Debug)]
pub struct StratumSettings {
    /// Close a connection silent for this long.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Longest accepted line in bytes.
    pub max_line_length: usize,
    /// Per-session variable difficulty, if enabled.
    pub vardiff: Option<crate::vardiff::VardiffConfig>,
}

/// Serves Stratum on `listener` until `shutdown`, then waits for every connection to finish
/// the request it is handling.
pub async fn run(listener: TcpListener, ctx: Arc<Context>, shutdown: CancellationToken) {
    let settings = ctx.stratum.clone();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(10);
                a
            }
            Err(e) => {
                // Out of file descriptors and similar: wait instead of spinning.
                tracing::warn!("stratum accept: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if !ctx.policy.on_connect(&peer.ip().to_string()) {
            tracing::debug!(%peer, "refused by policy");
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = settings.max_connections, "connection limit reached, closing");
            continue;
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = serve(stream, peer, &ctx, &shutdown).await {
                tracing::debug!(%peer, "stratum connection: {e}");
            }
            drop(permit);
        });
    }
    tracker.close();
    if timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!(
            connections = tracker.len(),
            "stratum connections still busy after the drain timeout"
        );
    }
}

/// Errors that end one connection.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    /// Reading failed.
    #[error(transparent)]
    Lines(#[from] LinesCodecError),
    /// The miner does not read its replies.
    #[error("write timed out")]
    WriteTimeout,
}

/// One connection until EOF, idle timeout, an I/O error or shutdown.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    shutdown: &CancellationToken,
) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let settings = &ctx.stratum;
    let mut conn = Framed::new(
        stream,
        LinesCodec::new_with_max_length(settings.max_line_length),
    );
    let ip = peer.ip().to_string();
    let mut session = Session::new(ip.clone(), ctx);
    let mut jobs = ctx.upstreams.subscribe();
    jobs.mark_unchanged();
    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    // After a decode error the framed stream yields one `None` that is not EOF.
    let mut after_error = false;
    let mut first_line = true;
    tracing::debug!(%peer, "stratum connection");
    loop {
        let item = tokio::select! {
            // Shutdown first: stop taking requests at once, even with lines buffered.
            biased;
            () = shutdown.cancelled() => break,
            () = &mut idle => {
                tracing::debug!(%peer, "idle timeout");
                break;
            }
            changed = jobs.changed() => {
                if changed.is_err() {
                    break;
                }
                if let Some(push) = session.job_push(ctx) {
                    send(&mut conn, push, settings.idle_timeout).await?;
                }
                continue;
            }
            item = conn.next() => item,
        };
        let reply = match item {
            None if after_error => {
                after_error = false;
                continue;
            }
            None => break,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                tracing::debug!(%peer, "line too long");
                ctx.policy.on_malformed(&ip);
                after_error = true;
                Response::err(serde_json::Value::Null, REQUEST_TOO_LARGE)
            }
            // LinesCodec consumed the line before finding it is not UTF-8.
            Some(Err(LinesCodecError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                ctx.policy.on_malformed(&ip);
                after_error = true;
                Response::err(serde_json::Value::Null, MALFORMED_REQUEST)
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(line)) => {
                if line.trim().is_empty() {
                    continue;
                }
                let first = std::mem::take(&mut first_line);
                match Request::parse(&line) {
                    // An EthereumStratum/1.0.0 miner: its first message is mining.subscribe.
                    Ok(req) if first && req.method == "mining.subscribe" => {
                        nicehash_server::serve(conn, peer, Some(req), ctx, shutdown).await;
                        return Ok(());
                    }
                    Ok(req) => session.handle(ctx, req).await,
                    Err((id, e)) => {
                        ctx.policy.on_malformed(&ip);
                        Response::err(id, e)
                    }
                }
            }
        };
        idle.as_mut()
            .reset(tokio::time::Instant::now() + settings.idle_timeout);
        send(&mut conn, reply, settings.idle_timeout).await?;
        if ctx.policy.is_banned(&ip) {
            tracing::debug!(%peer, "banned, closing");
            break;
        }
    }
    Ok(())
}

/// Writes one line; a miner that stops reading for `limit` loses its connection.
async fn send(
    conn: &mut Framed<TcpStream, LinesCodec>,
    msg: Response,
    limit: Duration,
) -> Result<(), ConnError> {
    timeout(limit, conn.send(msg.to_line()))
        .await
        .map_err(|_| ConnError::WriteTimeout)?
        .map_err(ConnError::from)
}
