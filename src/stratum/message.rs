//! JSON-RPC messages of the EthProxy Stratum dialect (also used by HTTP getwork), sans-IO:
//! parsing a request line, printing replies and job pushes, and the error replies miners know.

use serde::Serialize;
use serde_json::Value;

/// An error reply: a code and message miners and open-ethereum-pool tools already know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorReply {
    /// JSON-RPC error code.
    pub code: i32,
    /// Message.
    pub message: &'static str,
}

impl ErrorReply {
    const fn new(code: i32, message: &'static str) -> Self {
        Self { code, message }
    }
}

/// Params missing or of the wrong shape.
pub const INVALID_PARAMS: ErrorReply = ErrorReply::new(-1, "Invalid params");
/// Login is not `0x` + 40 hex digits.
pub const INVALID_LOGIN: ErrorReply = ErrorReply::new(-1, "Invalid login");
/// Login in the Redis blacklist.
pub const BLACKLISTED: ErrorReply = ErrorReply::new(-1, "You are blacklisted");
/// Submit params that are not lowercase `0x` hex of the right lengths.
pub const MALFORMED_POW: ErrorReply = ErrorReply::new(-1, "Malformed PoW result");
/// The invalid-share policy tripped but the share was valid (policy, issue 5).
pub const HIGH_INVALID_RATE: ErrorReply = ErrorReply::new(-1, "High rate of invalid shares");
/// A line that is not a JSON-RPC request.
pub const MALFORMED_REQUEST: ErrorReply = ErrorReply::new(-1, "Malformed request");
/// A line or body over the size limit.
pub const REQUEST_TOO_LARGE: ErrorReply = ErrorReply::new(-1, "Request too large");
/// The verifier queue is full: the share was not checked, send it again.
pub const VERIFIER_BUSY: ErrorReply = ErrorReply::new(-1, "Verifier busy, try again");
/// Redis could not store the share: it is not counted.
pub const STORAGE_DOWN: ErrorReply = ErrorReply::new(-1, "Share not stored, storage unavailable");
/// No template, or the proxy is sick.
pub const WORK_NOT_READY: ErrorReply = ErrorReply::new(0, "Work not ready");
/// The (nonce, header, mix) triple was submitted before.
pub const DUPLICATE_SHARE: ErrorReply = ErrorReply::new(22, "Duplicate share");
/// Invalid share once the policy trips (issue 5).
pub const INVALID_SHARE: ErrorReply = ErrorReply::new(23, "Invalid share");
/// Submit before login.
pub const NOT_SUBSCRIBED: ErrorReply = ErrorReply::new(25, "Not subscribed");
/// Unknown method.
pub const METHOD_NOT_FOUND: ErrorReply = ErrorReply::new(-3, "Method not found");

/// A request as the miner sent it.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Echoed in the reply (null when absent).
    pub id: Value,
    /// Method name.
    pub method: String,
    /// Params (null when absent).
    pub params: Value,
    /// The EthProxy `worker` field, if a string.
    pub worker: Option<String>,
}

impl Request {
    /// Parses one line; on failure the error carries the id if one could be read.
    pub fn parse(line: &str) -> Result<Self, (Value, ErrorReply)> {
        let v: Value = serde_json::from_str(line).map_err(|_| (Value::Null, MALFORMED_REQUEST))?;
        Self::from_value(v)
    }

    /// A request from a JSON value.
    pub fn from_value(mut v: Value) -> Result<Self, (Value, ErrorReply)> {
        let Some(obj) = v.as_object_mut() else {
            return Err((Value::Null, MALFORMED_REQUEST));
        };
        let id = obj.remove("id").unwrap_or(Value::Null);
        let Some(Value::String(method)) = obj.remove("method") else {
            return Err((id, MALFORMED_REQUEST));
        };
        Ok(Self {
            id,
            method,
            params: obj.remove("params").unwrap_or(Value::Null),
            worker: match obj.remove("worker") {
                Some(Value::String(w)) => Some(w),
                _ => None,
            },
        })
    }
}

/// A reply, or a job push (id 0).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Response {
    /// The request's id.
    pub id: Value,
    /// Always "2.0".
    pub jsonrpc: &'static str,
    /// The result; null with an error.
    pub result: Value,
    /// The error, omitted on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
}

impl Response {
    /// A successful reply.
    pub fn ok(id: Value, result: Value) -> Self {
        Self {
            id,
            jsonrpc: "2.0",
            result,
            error: None,
        }
    }

    /// An error reply.
    pub fn err(id: Value, error: ErrorReply) -> Self {
        Self {
            id,
            jsonrpc: "2.0",
            result: Value::Null,
            error: Some(error),
        }
    }

    /// A reply from a result or error.
    pub fn from_result(id: Value, r: Result<Value, ErrorReply>) -> Self {
        match r {
            Ok(v) => Self::ok(id, v),
            Err(e) => Self::err(id, e),
        }
    }

    /// The new-job push: `{"id":0,"jsonrpc":"2.0","result":[header, seed, share target]}`.
    pub fn job(work: [&str; 3]) -> Self {
        Self::ok(Value::from(0), Value::from(work.to_vec()))
    }

    /// The reply as one JSON line without the newline.
    pub fn to_line(&self) -> String {
        // Serialising plain JSON values and &str cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_are_byte_exact() {
        assert_eq!(
            Response::ok(json!(1), json!(true)).to_line(),
            r#"{"id":1,"jsonrpc":"2.0","result":true}"#
        );
        assert_eq!(
            Response::err(json!(1), DUPLICATE_SHARE).to_line(),
            r#"{"id":1,"jsonrpc":"2.0","result":null,"error":{"code":22,"message":"Duplicate share"}}"#
        );
        assert_eq!(
            Response::job(["0xa", "0xb", "0xc"]).to_line(),
            r#"{"id":0,"jsonrpc":"2.0","result":["0xa","0xb","0xc"]}"#
        );
    }

    #[test]
    fn parses_requests_and_rejects_junk() {
        let r =
            Request::parse(r#"{"id":7,"method":"eth_getWork","worker":"rig1"}"#).expect("valid");
        assert_eq!((r.id, r.method.as_str()), (json!(7), "eth_getWork"));
        assert_eq!(r.worker.as_deref(), Some("rig1"));
        assert_eq!(
            Request::parse("{nope").expect_err("junk").1,
            MALFORMED_REQUEST
        );
        assert_eq!(
            Request::parse("[1]").expect_err("array").1,
            MALFORMED_REQUEST
        );
        assert_eq!(
            Request::parse(r#"{"id":3,"method":5}"#).expect_err("method"),
            (json!(3), MALFORMED_REQUEST)
        );
    }
}
