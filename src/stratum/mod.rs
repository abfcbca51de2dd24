//! The Stratum front end (EthProxy dialect: newline-delimited JSON-RPC over TCP): the accept
//! loop with a connection cap, and each connection's loop of requests, pipelined share checks
//! and job pushes (the socket side is in [`conn`]).

pub mod conn;
pub mod message;
pub mod method;
pub mod nicehash;
pub mod nicehash_server;
pub mod session;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::codec::{Framed, LinesCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::Context;
use conn::{BadLine, Conn, ConnError, Event};
use message::{Request, Response, MALFORMED_REQUEST, REQUEST_TOO_LARGE};
use session::{Session, ShareDone, Step};

/// How long shutdown waits for connections to finish their request in hand.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A Stratum dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// EthProxy (`eth_submitLogin`, `eth_getWork`, `eth_submitWork`).
    EthProxy,
    /// EthereumStratum/1.0.0 (NiceHash).
    EthereumStratum,
}

impl Dialect {
    /// Both, for reports.
    pub const ALL: [Dialect; 2] = [Dialect::EthProxy, Dialect::EthereumStratum];

    /// Name in metrics and stats.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::EthProxy => "ethproxy",
            Dialect::EthereumStratum => "ethereumstratum",
        }
    }
}

/// Open Stratum sessions by dialect.
#[derive(Debug, Default)]
pub struct Sessions([AtomicU64; 2]);

impl Sessions {
    /// Counts a session of `dialect` until the guard drops.
    pub fn open(&self, dialect: Dialect) -> SessionGuard<'_> {
        self.0[dialect as usize].fetch_add(1, Ordering::Relaxed);
        SessionGuard(&self.0[dialect as usize])
    }

    /// Sessions of `dialect` open now.
    pub fn count(&self, dialect: Dialect) -> u64 {
        self.0[dialect as usize].load(Ordering::Relaxed)
    }
}

/// Keeps one session counted.
#[derive(Debug)]
pub struct SessionGuard<'a>(&'a AtomicU64);

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

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

/// One connection until EOF, idle timeout, an I/O error or shutdown; answers still in flight
/// then are finished and written (within [`DRAIN_TIMEOUT`]).
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
    shutdown: &CancellationToken,
) -> Result<(), ConnError> {
    let _ = stream.set_nodelay(true);
    let settings = &ctx.stratum;
    let framed = Framed::with_capacity(
        stream,
        LinesCodec::new_with_max_length(settings.max_line_length),
        conn::BUFFER_BYTES,
    );
    let mut conn = Conn::new(framed, ctx.upstreams.subscribe(), settings.idle_timeout);
    let ip = peer.ip().to_string();
    let mut session = Session::new(ip.clone(), ctx);
    let mut first_line = true;
    let open = ctx.sessions.open(Dialect::EthProxy);
    tracing::debug!(%peer, "stratum connection");
    let why = loop {
        match conn.next(shutdown).await {
            Event::Close(why) => break why,
            Event::NewWork => {
                // Queued behind earlier answers: a push never overtakes a getWork reply.
                if let Some(push) = session.job_push(ctx) {
                    conn.answer_now(Answer::Now(push));
                }
            }
            Event::Bad(bad) => {
                ctx.policy.on_malformed(&ip);
                let e = match bad {
                    BadLine::TooLarge => REQUEST_TOO_LARGE,
                    BadLine::NotUtf8 => MALFORMED_REQUEST,
                };
                conn.answer_now(Answer::Now(Response::err(Value::Null, e)));
            }
            Event::Line(line) => {
                let first = std::mem::take(&mut first_line);
                match Request::parse(&line) {
                    // An EthereumStratum/1.0.0 miner: its first message is mining.subscribe.
                    Ok(req) if first && req.method == "mining.subscribe" => {
                        drop(open);
                        let framed = conn.into_framed();
                        nicehash_server::serve(framed, peer, Some(req), ctx, shutdown).await;
                        return Ok(());
                    }
                    Ok(req) => match session.step(ctx, req) {
                        Step::Reply(r) => conn.answer_now(Answer::Now(r)),
                        Step::Share(job) => {
                            conn.answer_later(async move { Answer::Share(job.run(ctx).await) });
                        }
                    },
                    Err((id, e)) => {
                        ctx.policy.on_malformed(&ip);
                        conn.answer_now(Answer::Now(Response::err(id, e)));
                    }
                }
            }
            Event::Done(answer) => {
                let mut lines = vec![session.reply(ctx, answer).to_line()];
                while let Some(a) = conn.ready_answer() {
                    lines.push(session.reply(ctx, a).to_line());
                }
                conn.send(lines).await?;
                if ctx.policy.is_banned(&ip) {
                    break "banned";
                }
            }
        }
    };
    tracing::debug!(%peer, why, "stratum connection closing");
    // Requests taken before the close are finished: a share being stored gets its answer.
    conn.finish(|a| vec![session.reply(ctx, a).to_line()]).await
}

/// An answer in flight on an EthProxy connection.
enum Answer {
    /// Ready.
    Now(Response),
    /// A judged share.
    Share(ShareDone),
}

impl Session {
    fn reply(&mut self, ctx: &Context, a: Answer) -> Response {
        match a {
            Answer::Now(r) => r,
            Answer::Share(done) => self.finish(ctx, done),
        }
    }
}
