//! The EthereumStratum/1.0.0 (NiceHash) front end on its own port: accept loop with the
//! policy's connect check, and each connection's loop feeding [`NiceHashSession`], pushing
//! `mining.notify` on new templates and sending shares through the same pipeline and policy as
//! EthProxy shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::message::Request;
use super::nicehash::{error, share_reply, Event, NiceHashSession, Work};
use crate::hexutil::parse_h256;
use crate::pipeline::Verdict;
use crate::proxy::Context;

/// Extranonce bytes per session: 65536 sessions at once, 6 bytes of nonce left to the miner.
pub const EXTRANONCE_BYTES: u8 = 2;

/// Errors that end one connection.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Lines(#[from] LinesCodecError),
    #[error("write timed out")]
    WriteTimeout,
}

/// Serves EthereumStratum/1.0.0 on `listener` until `shutdown`, with the Stratum section's
/// limits, then waits (up to the drain timeout) for connections to finish.
pub async fn run(listener: TcpListener, ctx: Arc<Context>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(ctx.stratum.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("nicehash accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !ctx.policy.on_connect(&peer.ip().to_string()) {
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _ = stream.set_nodelay(true);
            let conn = Framed::new(
                stream,
                LinesCodec::new_with_max_length(ctx.stratum.max_line_length),
            );
            serve(conn, peer, None, &ctx, &shutdown).await;
            drop(permit);
        });
    }
    tracker.close();
    if timeout(super::DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!("nicehash connections still busy after the drain timeout");
    }
}

/// The current work, unless there is none or the proxy is sick.
fn work(ctx: &Context) -> Option<Work> {
    let t = ctx.upstreams.work()?;
    Some(Work {
        header: t.header,
        seed: parse_h256(&t.seed_hex, "seed").ok()?,
    })
}

/// Serves one EthereumStratum/1.0.0 connection; `first` is a request already read (a session
/// detected on the EthProxy port from its first message).
pub async fn serve(
    mut conn: Framed<TcpStream, LinesCodec>,
    peer: SocketAddr,
    first: Option<Request>,
    ctx: &Context,
    shutdown: &CancellationToken,
) {
    let Some(extranonce) = ctx.extranonces.allocate() else {
        tracing::warn!(%peer, "no extranonce left, closing");
        return;
    };
    let mut session = NiceHashSession::new(extranonce, ctx.pipeline.difficulty());
    if let Some(v) = ctx.stratum.vardiff.clone() {
        session = session.with_vardiff(v, Duration::ZERO);
    }
    if let Err(e) = session_loop(&mut conn, peer, session, first, ctx, shutdown).await {
        tracing::debug!(%peer, "nicehash connection: {e}");
    }
}

async fn session_loop(
    conn: &mut Framed<TcpStream, LinesCodec>,
    peer: SocketAddr,
    mut session: NiceHashSession,
    mut first: Option<Request>,
    ctx: &Context,
    shutdown: &CancellationToken,
) -> Result<(), ConnError> {
    let settings = &ctx.stratum;
    let ip = peer.ip().to_string();
    let started = tokio::time::Instant::now();
    let mut jobs = ctx.upstreams.subscribe();
    jobs.mark_unchanged();
    let idle = tokio::time::sleep(settings.idle_timeout);
    tokio::pin!(idle);
    let mut after_error = false;
    loop {
        if let Some(req) = first.take() {
            for line in answer(&mut session, ctx, &ip, req, started.elapsed()).await {
                send(conn, line, settings.idle_timeout).await?;
            }
            continue;
        }
        let item = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = &mut idle => break,
            changed = jobs.changed() => {
                if changed.is_err() {
                    break;
                }
                if let Some(w) = work(ctx) {
                    for line in session.job(w, started.elapsed()) {
                        send(conn, line, settings.idle_timeout).await?;
                    }
                }
                continue;
            }
            item = conn.next() => item,
        };
        let lines = match item {
            None if after_error => {
                after_error = false;
                continue;
            }
            None => break,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                ctx.policy.on_malformed(&ip);
                after_error = true;
                vec![error(Value::Null, 20, "Request too large")]
            }
            Some(Err(LinesCodecError::Io(e))) if e.kind() == std::io::ErrorKind::InvalidData => {
                ctx.policy.on_malformed(&ip);
                after_error = true;
                vec![error(Value::Null, 20, "Malformed request")]
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(line)) if line.trim().is_empty() => continue,
            Some(Ok(line)) => match Request::parse(&line) {
                Err((id, _)) => {
                    ctx.policy.on_malformed(&ip);
                    vec![error(id, 20, "Malformed request")]
                }
                Ok(req) => answer(&mut session, ctx, &ip, req, started.elapsed()).await,
            },
        };
        idle.as_mut()
            .reset(tokio::time::Instant::now() + settings.idle_timeout);
        for line in lines {
            send(conn, line, settings.idle_timeout).await?;
        }
        if ctx.policy.is_banned(&ip) {
            break;
        }
    }
    Ok(())
}

async fn answer(
    session: &mut NiceHashSession,
    ctx: &Context,
    ip: &str,
    req: Request,
    now: Duration,
) -> Vec<String> {
    match session.handle(req) {
        Event::Reply { lines, malformed } => {
            if malformed {
                ctx.policy.on_malformed(ip);
            }
            lines
        }
        Event::Authorize { id, login, worker } => {
            if ctx.policy.on_login(&login, ip) {
                session.authorize(id, login, worker, work(ctx), now)
            } else {
                vec![NiceHashSession::refuse(id, "You are blacklisted")]
            }
        }
        Event::Submit(share) => {
            let verdict = match share.header {
                // Unknown or expired job id.
                None => {
                    ctx.pipeline.counters().record(Verdict::Stale);
                    Verdict::Stale
                }
                Some(header) => {
                    ctx.pipeline
                        .submit_nonce_at(
                            &share.login,
                            &share.worker,
                            share.nonce,
                            header,
                            share.difficulty,
                        )
                        .await
                }
            };
            session.record(verdict);
            let line = match ctx.policy.share_reply(ip, verdict) {
                Ok(_) => share_reply(share.id, verdict),
                Err(e) => error(share.id, e.code, e.message),
            };
            vec![line]
        }
    }
}

async fn send(
    conn: &mut Framed<TcpStream, LinesCodec>,
    line: String,
    limit: Duration,
) -> Result<(), ConnError> {
    timeout(limit, conn.send(line))
        .await
        .map_err(|_| ConnError::WriteTimeout)?
        .map_err(ConnError::from)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ProxyArgs};

    #[test]
    fn configured_by_section_and_flag() {
        let c = Config::parse("[stratum_nicehash]\nlisten = \"127.0.0.1:9009\"\n", "x")
            .expect("parses");
        let k = c.clone().check().expect("valid");
        assert_eq!(
            k.nicehash_addr.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9009")
        );
        assert!(Config::default()
            .check()
            .expect("valid")
            .nicehash_addr
            .is_none());
        let mut off = c;
        off.apply(&ProxyArgs {
            stratum_nicehash: Some("off".into()),
            ..ProxyArgs::default()
        });
        assert!(off.clone().check().expect("valid").nicehash_addr.is_none());
        off.apply(&ProxyArgs {
            stratum_nicehash: Some("nowhere".into()),
            ..ProxyArgs::default()
        });
        let e = off.check().expect_err("bad address");
        assert!(e.to_string().contains("stratum_nicehash.listen"), "{e}");
    }
}
