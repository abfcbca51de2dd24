//! One miner's Stratum session: its login and worker, and the answer to each request. No
//! socket here; the connection layer feeds requests in and writes the replies out.

use serde_json::Value;

use super::message::{
    Request, Response, BLACKLISTED, INVALID_PARAMS, METHOD_NOT_FOUND, NOT_SUBSCRIBED,
};
use super::method::{is_worker, Method, DEFAULT_WORKER};
use crate::ethash::target::target_hex;
use crate::pipeline::{share_target, Submit};
use crate::proxy::Context;
use crate::stratum::message::ErrorReply;
use crate::vardiff::SessionDiff;

/// Per-connection state.
#[derive(Clone, Debug, Default)]
pub struct Session {
    ip: String,
    login: Option<String>,
    worker: String,
    last_job: Option<[u8; 32]>,
    /// Vardiff state and when the session started, if vardiff is on.
    diff: Option<(SessionDiff, tokio::time::Instant)>,
}

impl Session {
    /// A session for a miner at `ip` (the policy's key).
    pub fn new(ip: String, ctx: &Context) -> Self {
        let diff = ctx.stratum.vardiff.clone().map(|c| {
            (
                SessionDiff::new(c, ctx.pipeline.difficulty(), std::time::Duration::ZERO),
                tokio::time::Instant::now(),
            )
        });
        Self {
            ip,
            diff,
            ..Self::default()
        }
    }

    /// The getWork result for this session: with vardiff, the target of the difficulty this
    /// header is issued at.
    fn work(&mut self, ctx: &Context) -> Result<([u8; 32], Value), ErrorReply> {
        let (header, mut work) = ctx.work()?;
        if let Some((diff, start)) = &mut self.diff {
            let d = diff.issue(header, start.elapsed());
            if d != ctx.pipeline.difficulty() {
                work[2] = Value::from(target_hex(share_target(d)));
            }
        }
        Ok((header, work))
    }

    /// The login, once `eth_submitLogin` succeeded.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// Answers one request: at once, or, for a share, with a [`ShareJob`] to run through the
    /// pipeline and hand back to [`Session::finish`]. Session state changes here, in request
    /// order, so a connection may run several share jobs at once.
    pub fn step(&mut self, ctx: &Context, req: Request) -> Step {
        let method = match Method::parse(&req) {
            Ok(m) => m,
            Err(e) => {
                if e == INVALID_PARAMS {
                    ctx.policy.on_malformed(&self.ip);
                }
                return Step::Reply(Response::err(req.id, e));
            }
        };
        let result = match method {
            Method::SubmitLogin { login, worker } => {
                if !ctx.policy.on_login(&login, &self.ip) {
                    Err(BLACKLISTED)
                } else {
                    self.worker = worker
                        .or_else(|| req.worker.clone().filter(|w| is_worker(w)))
                        .unwrap_or_else(|| DEFAULT_WORKER.to_string());
                    tracing::debug!(%login, worker = %self.worker, "stratum login");
                    self.login = Some(login);
                    Ok(Value::Bool(true))
                }
            }
            Method::GetWork => self.work(ctx).map(|(header, reply)| {
                self.last_job = Some(header);
                reply
            }),
            Method::SubmitWork(params) => match &self.login {
                None => Err(NOT_SUBSCRIBED),
                Some(login) => {
                    // The request's own `worker` field wins, as in open-ethereum-pool.
                    let worker = req
                        .worker
                        .as_deref()
                        .filter(|w| is_worker(w))
                        .unwrap_or(&self.worker);
                    let difficulty = self.diff.as_ref().map(|(diff, _)| {
                        Submit::from_params(&params)
                            .map_or(ctx.pipeline.difficulty(), |s| diff.for_share(&s.header))
                    });
                    return Step::Share(ShareJob {
                        id: req.id,
                        login: login.clone(),
                        worker: worker.to_string(),
                        params,
                        difficulty,
                    });
                }
            },
            Method::SubmitHashrate => Ok(Value::Bool(true)),
            Method::Unknown(_) => {
                ctx.policy.on_malformed(&self.ip);
                Err(METHOD_NOT_FOUND)
            }
        };
        Step::Reply(Response::from_result(req.id, result))
    }

    /// The reply to a share once the pipeline has judged it.
    pub fn finish(&mut self, ctx: &Context, done: ShareDone) -> Response {
        if done.verdict.is_valid() {
            if let Some((diff, _)) = &mut self.diff {
                diff.record_share();
            }
        }
        Response::from_result(done.id, ctx.policy.share_reply(&self.ip, done.verdict))
    }

    /// Answers one request, waiting for the pipeline if it is a share.
    pub async fn handle(&mut self, ctx: &Context, req: Request) -> Response {
        match self.step(ctx, req) {
            Step::Reply(r) => r,
            Step::Share(job) => {
                let done = job.run(ctx).await;
                self.finish(ctx, done)
            }
        }
    }

    /// The job push for the current template, if this session is logged in and has not seen
    /// that header yet.
    pub fn job_push(&mut self, ctx: &Context) -> Option<Response> {
        self.login.as_ref()?;
        let (header, work) = self.work(ctx).ok()?;
        if self.last_job == Some(header) {
            return None;
        }
        self.last_job = Some(header);
        Some(Response::ok(Value::from(0), work))
    }
}

/// What a request needs.
#[derive(Debug)]
pub enum Step {
    /// This reply, now.
    Reply(Response),
    /// A share to check; its reply comes from [`Session::finish`].
    Share(ShareJob),
}

/// An `eth_submitWork` taken from a logged-in session, owning what the pipeline needs.
#[derive(Debug)]
pub struct ShareJob {
    id: Value,
    login: String,
    worker: String,
    params: Value,
    /// The vardiff difficulty the share was issued at; None: the pool's.
    difficulty: Option<u64>,
}

impl ShareJob {
    /// Runs the share through the pipeline (verification and storage).
    pub async fn run(self, ctx: &Context) -> ShareDone {
        let p = &ctx.pipeline;
        let d = self.difficulty.unwrap_or_else(|| p.difficulty());
        let verdict = p
            .submit_params_at(&self.login, &self.worker, &self.params, d)
            .await;
        ShareDone {
            id: self.id,
            verdict,
        }
    }
}

/// A judged share, for [`Session::finish`].
#[derive(Debug)]
pub struct ShareDone {
    id: Value,
    verdict: crate::pipeline::Verdict,
}
