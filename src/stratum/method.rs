//! The EthProxy methods, sans-IO: which method a request is and whether its params are well
//! formed (login address and worker name rules shared with HTTP getwork).

use serde_json::Value;

use super::message::{ErrorReply, Request, INVALID_LOGIN, INVALID_PARAMS};
use crate::pipeline::{Submit, Verdict};

/// Worker name used when none (or an invalid one) is given.
pub const DEFAULT_WORKER: &str = "0";

/// A parsed request.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// `eth_submitLogin`: lowercase address and the worker from `addr.worker`, if any.
    SubmitLogin {
        /// `0x` + 40 lowercase hex digits.
        login: String,
        /// Worker given after a dot in the login.
        worker: Option<String>,
    },
    /// `eth_getWork`.
    GetWork,
    /// `eth_submitWork`, params not yet checked (that is the pipeline's verdict).
    SubmitWork(Value),
    /// `eth_submitHashrate` (answered true, not stored, as open-ethereum-pool does).
    SubmitHashrate,
    /// Anything else.
    Unknown(String),
}

impl Method {
    /// Classifies a request; `Err` for a login with bad params.
    pub fn parse(req: &Request) -> Result<Self, ErrorReply> {
        Ok(match req.method.as_str() {
            "eth_submitLogin" => {
                let first = req
                    .params
                    .as_array()
                    .and_then(|a| a.first())
                    .and_then(Value::as_str)
                    .ok_or(INVALID_PARAMS)?;
                let (login, worker) = parse_login(first)?;
                Self::SubmitLogin { login, worker }
            }
            "eth_getWork" => Self::GetWork,
            "eth_submitWork" => Self::SubmitWork(req.params.clone()),
            "eth_submitHashrate" => Self::SubmitHashrate,
            other => Self::Unknown(other.to_string()),
        })
    }
}

/// Splits `0xADDR[.worker]`, lower-casing the address; a bad worker suffix is dropped.
pub fn parse_login(s: &str) -> Result<(String, Option<String>), ErrorReply> {
    let (addr, worker) = match s.split_once('.') {
        Some((a, w)) => (a, Some(w)),
        None => (s, None),
    };
    if !is_address(addr) {
        return Err(INVALID_LOGIN);
    }
    Ok((
        addr.to_ascii_lowercase(),
        worker.filter(|w| is_worker(w)).map(str::to_string),
    ))
}

/// `0x` + 40 hex digits, any case.
pub fn is_address(s: &str) -> bool {
    s.len() == 42 && s.starts_with("0x") && s.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit)
}

/// `[0-9a-zA-Z-_]{1,8}`.
pub fn is_worker(s: &str) -> bool {
    (1..=8).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses `eth_submitWork` params into a share, or the verdict for bad ones.
pub fn parse_submit(params: &Value) -> Result<Submit, Verdict> {
    Submit::from_params(params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(method: &str, params: Value) -> Request {
        Request {
            id: json!(1),
            method: method.into(),
            params,
            worker: None,
        }
    }

    #[test]
    fn logins() {
        let addr = "0xB85150eb365e7df0941f0cf08235f987ba91506a";
        assert_eq!(
            Method::parse(&req("eth_submitLogin", json!([addr, "x@y"]))),
            Ok(Method::SubmitLogin {
                login: addr.to_ascii_lowercase(),
                worker: None
            })
        );
        assert_eq!(
            parse_login(&format!("{addr}.rig-1")),
            Ok((addr.to_ascii_lowercase(), Some("rig-1".into())))
        );
        assert_eq!(
            parse_login(&format!("{addr}.waytoolongname")),
            Ok((addr.to_ascii_lowercase(), None))
        );
        assert_eq!(parse_login("0x1234"), Err(INVALID_LOGIN));
        assert_eq!(parse_login(&addr.replace('B', "g")), Err(INVALID_LOGIN));
        assert_eq!(
            Method::parse(&req("eth_submitLogin", json!([]))),
            Err(INVALID_PARAMS)
        );
        assert_eq!(
            Method::parse(&req("eth_submitLogin", json!([5]))),
            Err(INVALID_PARAMS)
        );
        assert_eq!(
            Method::parse(&req("mining.subscribe", json!([]))),
            Ok(Method::Unknown("mining.subscribe".into()))
        );
    }
}
