//! The EthereumStratum/1.0.0 (NiceHash) front end on its own port: accept loop with the
//! policy's connect check, and each connection's loop feeding [`NiceHashSession`], pushing
//! `mining.notify` on new templates and sending shares through the same pipeline and policy as
//! EthProxy shares.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_util::codec::{Framed, LinesCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{BadLine, Conn, ConnError, Event as ConnEvent};
use super::message::{Request, HIGH_INVALID_RATE, INVALID_SHARE};
use super::nicehash::{error, share_reply, Event, NiceHashSession, Work};
use crate::hexutil::parse_h256;
use crate::pipeline::Verdict;
use crate::proxy::Context;

/// Extranonce bytes per session: 65536 sessions at once, 6 bytes of nonce left to the miner.
pub const EXTRANONCE_BYTES: u8 = 2;

/// Errors that end one connection.
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
            let conn = Framed::with_capacity(
                stream,
                LinesCodec::new_with_max_length(ctx.stratum.max_line_length),
                super::conn::BUFFER_BYTES,
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
/// Serves one EthereumStratum/1.0.0 connection (`first`: a request already read, when the
/// dialect was detected on the EthProxy port).
pub async fn serve(
    framed: Framed<TcpStream, LinesCodec>,
    peer: SocketAddr,
    first: Option<Request>,
    ctx: &Context,
    shutdown: &CancellationToken,
) {
    let _open = ctx.sessions.open(super::Dialect::EthereumStratum);
    let Some(extranonce) = ctx.extranonces.allocate() else {
        tracing::warn!(%peer, "no extranonce left, closing");
        return;
    };
    let mut session = NiceHashSession::new(extranonce, ctx.pipeline.difficulty());
    if let Some(v) = ctx.stratum.vardiff.clone() {
        session = session.with_vardiff(v, Duration::ZERO);
    }
    let conn = Conn::new(framed, ctx.upstreams.subscribe(), ctx.stratum.idle_timeout);
    if let Err(e) = session_loop(conn, peer, session, first, ctx, shutdown).await {
        tracing::debug!(%peer, "nicehash connection: {e}");
    }
}

/// An answer in flight on a NiceHash connection.
enum Answer {
    /// Ready lines.
    Lines(Vec<String>),
    /// A judged share.
    Share { id: Value, verdict: Verdict },
}

async fn session_loop<'a>(
    mut conn: Conn<'a, Answer>,
    peer: SocketAddr,
    mut session: NiceHashSession,
    first: Option<Request>,
    ctx: &'a Context,
    shutdown: &CancellationToken,
) -> Result<(), ConnError> {
    let ip = peer.ip().to_string();
    let started = tokio::time::Instant::now();
    if let Some(req) = first {
        take(&mut conn, &mut session, ctx, &ip, req, started.elapsed());
    }
    let why = loop {
        match conn.next(shutdown).await {
            ConnEvent::Close(why) => break why,
            ConnEvent::NewWork => {
                // Queued behind earlier answers: a push never overtakes an authorize reply.
                if let Some(w) = work(ctx) {
                    let lines = session.job(w, started.elapsed());
                    if !lines.is_empty() {
                        conn.answer_now(Answer::Lines(lines));
                    }
                }
            }
            ConnEvent::Bad(bad) => {
                ctx.policy.on_malformed(&ip);
                let message = match bad {
                    BadLine::TooLarge => "Request too large",
                    BadLine::NotUtf8 => "Malformed request",
                };
                conn.answer_now(Answer::Lines(vec![error(Value::Null, 20, message)]));
            }
            ConnEvent::Line(line) => match Request::parse(&line) {
                Err((id, _)) => {
                    ctx.policy.on_malformed(&ip);
                    conn.answer_now(Answer::Lines(vec![error(id, 20, "Malformed request")]));
                }
                Ok(req) => take(&mut conn, &mut session, ctx, &ip, req, started.elapsed()),
            },
            ConnEvent::Done(a) => {
                let mut lines = reply(&mut session, ctx, &ip, a);
                while let Some(a) = conn.ready_answer() {
                    lines.extend(reply(&mut session, ctx, &ip, a));
                }
                conn.send(lines).await?;
                if ctx.policy.is_banned(&ip) {
                    break "banned";
                }
            }
        }
    };
    tracing::debug!(%peer, why, "nicehash connection closing");
    // Requests taken before the close are finished: a share being stored gets its answer.
    conn.finish(|a| reply(&mut session, ctx, &ip, a)).await
}

/// Takes one request: answered at once, or a share queued for the pipeline.
fn take<'a>(
    conn: &mut Conn<'a, Answer>,
    session: &mut NiceHashSession,
    ctx: &'a Context,
    ip: &str,
    req: Request,
    now: Duration,
) {
    let lines = match session.handle(req) {
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
            conn.answer_later(async move {
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
                Answer::Share {
                    id: share.id,
                    verdict,
                }
            });
            return;
        }
    };
    conn.answer_now(Answer::Lines(lines));
}

/// The lines for a finished answer; a share's verdict goes to vardiff and the policy first.
fn reply(session: &mut NiceHashSession, ctx: &Context, ip: &str, a: Answer) -> Vec<String> {
    match a {
        Answer::Lines(lines) => lines,
        Answer::Share { id, verdict } => {
            session.record(verdict);
            // The policy's own refusals keep their codes; every other verdict is answered
            // in this dialect's terms.
            let line = match ctx.policy.share_reply(ip, verdict) {
                Err(e) if e == HIGH_INVALID_RATE || e == INVALID_SHARE => {
                    error(id, e.code, e.message)
                }
                _ => share_reply(id, verdict),
            };
            vec![line]
        }
    }
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
