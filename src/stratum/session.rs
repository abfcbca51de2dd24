//! One miner's Stratum session: its login and worker, and the answer to each request. No
//! socket here; the connection layer feeds requests in and writes the replies out.

use serde_json::Value;

use super::message::{
    Request, Response, BLACKLISTED, INVALID_PARAMS, METHOD_NOT_FOUND, NOT_SUBSCRIBED,
};
use super::method::{is_worker, Method, DEFAULT_WORKER};
use crate::proxy::Context;

/// Per-connection state.
#[derive(Clone, Debug, Default)]
pub struct Session {
    ip: String,
    login: Option<String>,
    worker: String,
    last_job: Option<[u8; 32]>,
}

impl Session {
    /// A session for a miner at `ip` (the policy's key).
    pub fn new(ip: String) -> Self {
        Self {
            ip,
            ..Self::default()
        }
    }

    /// The login, once `eth_submitLogin` succeeded.
    pub fn login(&self) -> Option<&str> {
        self.login.as_deref()
    }

    /// Answers one request.
    pub async fn handle(&mut self, ctx: &Context, req: Request) -> Response {
        let method = match Method::parse(&req) {
            Ok(m) => m,
            Err(e) => {
                if e == INVALID_PARAMS {
                    ctx.policy.on_malformed(&self.ip);
                }
                return Response::err(req.id, e);
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
            Method::GetWork => ctx.work().map(|(header, reply)| {
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
                    let verdict = ctx.pipeline.submit_params(login, worker, &params).await;
                    ctx.policy.share_reply(&self.ip, verdict)
                }
            },
            Method::SubmitHashrate => Ok(Value::Bool(true)),
            Method::Unknown(_) => {
                ctx.policy.on_malformed(&self.ip);
                Err(METHOD_NOT_FOUND)
            }
        };
        Response::from_result(req.id, result)
    }

    /// The job push for the current template, if this session is logged in and has not seen
    /// that header yet.
    pub fn job_push(&mut self, ctx: &Context) -> Option<Response> {
        self.login.as_ref()?;
        let (header, work) = ctx.work().ok()?;
        if self.last_job == Some(header) {
            return None;
        }
        self.last_job = Some(header);
        Some(Response::ok(Value::from(0), work))
    }
}
