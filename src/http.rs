//! HTTP getwork front end (axum): `POST /{login}` and `POST /{login}/{worker}` with
//! eth_getWork, eth_submitWork, eth_getBlockByNumber and eth_submitHashrate, open-ethereum-pool's
//! size limits, and X-Forwarded-For only when configured.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::Value;

use crate::proxy::Context;
use crate::stratum::message::{
    ErrorReply, Request as RpcRequest, Response as RpcResponse, BLACKLISTED, MALFORMED_REQUEST,
    METHOD_NOT_FOUND,
};
use crate::stratum::method::{is_address, is_worker, DEFAULT_WORKER};

/// HTTP limits.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// Largest body in bytes.
    pub limit_body_size: usize,
    /// Largest total header size in bytes.
    pub limit_headers_size: usize,
    /// Trust X-Forwarded-For.
    pub behind_reverse_proxy: bool,
}

/// The getwork application; serve it with `into_make_service_with_connect_info::<SocketAddr>()`
/// so client addresses reach the logs.
pub fn app(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/{login}", post(login_only))
        .route("/{login}/{worker}", post(login_worker))
        .with_state(ctx)
}

async fn login_only(
    State(ctx): State<Arc<Context>>,
    Path(login): Path<String>,
    req: Request,
) -> Response {
    handle(ctx, login, None, req).await
}

async fn login_worker(
    State(ctx): State<Arc<Context>>,
    Path((login, worker)): Path<(String, String)>,
    req: Request,
) -> Response {
    handle(ctx, login, Some(worker), req).await
}

async fn handle(
    ctx: Arc<Context>,
    login: String,
    worker: Option<String>,
    req: Request,
) -> Response {
    // Paths that do not match open-ethereum-pool's route patterns are not found.
    if !is_address(&login) || worker.as_deref().is_some_and(|w| !is_worker(w)) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let settings = &ctx.http;
    let ip = client_ip(&req, settings.behind_reverse_proxy);
    if ctx.policy.is_banned(&ip) {
        return (StatusCode::FORBIDDEN, "Banned\n").into_response();
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > settings.limit_headers_size {
        return StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.into_response();
    }
    let too_large = || {
        tracing::debug!(%ip, "request too large");
        ctx.policy.on_malformed(&ip);
        (StatusCode::EXPECTATION_FAILED, "Request too large\n").into_response()
    };
    if content_length(req.headers()).is_some_and(|n| n > settings.limit_body_size) {
        return too_large();
    }
    let Ok(body) = axum::body::to_bytes(req.into_body(), settings.limit_body_size).await else {
        return too_large();
    };
    let login = login.to_ascii_lowercase();
    let worker = worker.unwrap_or_else(|| DEFAULT_WORKER.to_string());
    let mut out = String::new();
    for item in body_requests(&body) {
        let reply = match item {
            BodyItem::Request(r) => {
                let id = r.id.clone();
                RpcResponse::from_result(id, method(&ctx, &ip, &login, &worker, r).await)
            }
            BodyItem::NoId => {
                tracing::debug!(%ip, "request without id ignored");
                ctx.policy.on_malformed(&ip);
                continue;
            }
            BodyItem::Invalid(id, e) => {
                ctx.policy.on_malformed(&ip);
                RpcResponse::err(id, e)
            }
            BodyItem::Malformed => {
                tracing::debug!(%ip, "malformed request");
                ctx.policy.on_malformed(&ip);
                RpcResponse::err(Value::Null, MALFORMED_REQUEST)
            }
        };
        out.push_str(&reply.to_line());
        out.push('\n');
    }
    (
        [
            (header::CONTENT_TYPE, "application/json; charset=UTF-8"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        Body::from(out),
    )
        .into_response()
}

/// One item of a getwork body, sans-IO (what [`body_requests`] yields).
#[derive(Clone, Debug, PartialEq)]
pub enum BodyItem {
    /// A request to answer.
    Request(RpcRequest),
    /// A request without an id: not answered, counted as malformed.
    NoId,
    /// A JSON value that is not a request: answer this error and read on.
    Invalid(Value, ErrorReply),
    /// Bytes that are not JSON: answer "Malformed request"; always the last item.
    Malformed,
}

/// The requests in a getwork body, which may carry several back to back as Go's
/// json.Decoder reads them; reading stops at the first bytes that are not JSON.
pub fn body_requests(body: &[u8]) -> impl Iterator<Item = BodyItem> + '_ {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        Some(match values.next()? {
            Err(_) => {
                done = true;
                BodyItem::Malformed
            }
            Ok(v) => match RpcRequest::from_value(v) {
                Ok(r) if r.id.is_null() => BodyItem::NoId,
                Ok(r) => BodyItem::Request(r),
                Err((id, e)) => BodyItem::Invalid(id, e),
            },
        })
    })
}

async fn method(
    ctx: &Context,
    ip: &str,
    login: &str,
    worker: &str,
    req: RpcRequest,
) -> Result<Value, ErrorReply> {
    if !ctx.policy.on_login(login, ip) {
        return Err(BLACKLISTED);
    }
    match req.method.as_str() {
        "eth_getWork" => ctx.work().map(|(_, w)| w),
        "eth_submitWork" if req.params.is_null() => {
            ctx.policy.on_malformed(ip);
            Err(MALFORMED_REQUEST)
        }
        "eth_submitWork" => {
            let verdict = ctx.pipeline.submit_params(login, worker, &req.params).await;
            ctx.policy.share_reply(ip, verdict)
        }
        "eth_getBlockByNumber" => Ok(ctx.pending_block()),
        "eth_submitHashrate" => Ok(Value::Bool(true)),
        _ => {
            ctx.policy.on_malformed(ip);
            Err(METHOD_NOT_FOUND)
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The client's address: the first X-Forwarded-For entry behind a reverse proxy, else the
/// peer address (if the server was started with connect info).
fn client_ip(req: &Request, behind_reverse_proxy: bool) -> String {
    if behind_reverse_proxy {
        if let Some(first) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            return first.to_string();
        }
    }
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(forwarded: Option<&str>, peer: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().method("POST").uri("/x");
        if let Some(f) = forwarded {
            b = b.header("x-forwarded-for", f);
        }
        let mut req = b.body(Body::empty()).expect("request");
        if let Some(p) = peer {
            req.extensions_mut()
                .insert(ConnectInfo(p.parse::<SocketAddr>().expect("addr")));
        }
        req
    }

    #[test]
    fn body_requests_read_back_to_back_and_stop_at_junk() {
        let body = br#"{"id":1,"method":"eth_getWork"} {"method":"x"}[1]
            {"id":2,"method":"eth_submitHashrate"} {nope {"id":3,"method":"eth_getWork"}"#;
        let items: Vec<BodyItem> = body_requests(body).collect();
        let methods: Vec<&str> = items
            .iter()
            .filter_map(|i| match i {
                BodyItem::Request(r) => Some(r.method.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(methods, ["eth_getWork", "eth_submitHashrate"]);
        assert_eq!(items.len(), 5);
        assert_eq!(items[1], BodyItem::NoId);
        assert_eq!(items[2], BodyItem::Invalid(Value::Null, MALFORMED_REQUEST));
        assert_eq!(items[4], BodyItem::Malformed);
        assert_eq!(body_requests(b"  ").count(), 0);
    }

    #[test]
    fn forwarded_for_only_behind_a_reverse_proxy() {
        let req = request(Some("203.0.113.7, 10.0.0.1"), Some("10.0.0.1:4000"));
        assert_eq!(client_ip(&req, false), "10.0.0.1");
        assert_eq!(client_ip(&req, true), "203.0.113.7");
        let req = request(None, Some("10.0.0.2:4000"));
        assert_eq!(client_ip(&req, true), "10.0.0.2");
        assert_eq!(client_ip(&request(None, None), false), "unknown");
    }
}
