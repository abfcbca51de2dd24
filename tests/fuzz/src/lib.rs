//! The invariants the fuzz targets check, shared with `tests/fuzz_regressions.rs` (which
//! replays the seeds and kept crash inputs on stable): each entry point takes raw bytes, runs
//! them through the wire parsers as the servers do, and panics when a promise is broken.

use std::time::Duration;

use dagproxy::hexutil::{nonce_hex, parse_h256, parse_nonce, to_hex};
use dagproxy::http::{body_requests, BodyItem};
use dagproxy::pipeline::{Submit, Verdict};
use dagproxy::stratum::message::{
    ErrorReply, Request, Response, INVALID_LOGIN, INVALID_PARAMS, MALFORMED_REQUEST,
    METHOD_NOT_FOUND,
};
use dagproxy::stratum::method::{is_address, is_worker, parse_login, Method};
use dagproxy::stratum::nicehash::{
    self, share_reply, Event, ExtranonceAllocator, NiceHashSession, Work,
};
use serde_json::{json, Value};

/// The login the NiceHash sessions are authorized with before the fuzzed lines.
const LOGIN: &str = "0xb85150eb365e7df0941f0cf08235f987ba91506a";
/// The only job the NiceHash sessions are given.
const WORK: Work = Work {
    header: [0xab; 32],
    seed: [0x01; 32],
};
/// The NiceHash sessions' share difficulty (no vardiff).
const DIFFICULTY: u64 = 1 << 31;

/// Every verdict, for the share replies.
const VERDICTS: [Verdict; 10] = [
    Verdict::Valid,
    Verdict::Block,
    Verdict::Stale,
    Verdict::LowDifficulty,
    Verdict::MixMismatch,
    Verdict::Duplicate,
    Verdict::Malformed,
    Verdict::InvalidParams,
    Verdict::Busy,
    Verdict::StorageDown,
];

/// EthProxy: each line (as the connection's line codec cuts them) through `Request::parse`,
/// `Method::parse` and `Submit::from_params`, plus the session-free helpers on the line and
/// on every string param.
pub fn stratum_ethproxy(data: &[u8]) {
    for line in lines(data) {
        strings(line);
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            // Raw params, no request around them.
            submit(&Value::Null, &v);
        }
        match Request::parse(line) {
            Err((id, e)) => {
                assert_eq!(e, MALFORMED_REQUEST);
                error_reply(&id, e);
            }
            Ok(req) => ethproxy_request(&req),
        }
    }
}

/// EthereumStratum/1.0.0: each line into a session already subscribed and authorized with a
/// job out (so `mining.submit` parsing is reached), for every extranonce width.
pub fn stratum_nicehash(data: &[u8]) {
    for bytes in 1..=3 {
        let mut m = NiceHashModel::new(bytes);
        for line in lines(data) {
            strings(line);
            match Request::parse(line) {
                // What the server answers to a line that is not a request.
                Err((id, _)) => {
                    let v = json_line(&nicehash::error(id.clone(), 20, "Malformed request"));
                    assert_eq!(v["id"], id);
                }
                Ok(req) => m.handle(req),
            }
        }
    }
}

/// HTTP getwork: a body through `body_requests`, each request through the checks the
/// handler applies before the pipeline.
pub fn http_body(data: &[u8]) {
    let items: Vec<BodyItem> = body_requests(data).collect();
    // Every item consumed at least a byte; nothing follows bytes that are not JSON.
    assert!(items.len() <= data.len(), "{} items", items.len());
    if let Some(at) = items.iter().position(|i| *i == BodyItem::Malformed) {
        assert_eq!(at, items.len() - 1, "items after malformed bytes");
    }
    // A body of exactly one JSON value reads as the Stratum parser reads that value.
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let single = match Request::from_value(v) {
            Ok(r) if r.id.is_null() => BodyItem::NoId,
            Ok(r) => BodyItem::Request(r),
            Err((id, e)) => BodyItem::Invalid(id, e),
        };
        assert_eq!(items, [single]);
    }
    for item in items {
        match item {
            BodyItem::Request(r) => {
                assert!(!r.id.is_null());
                r.params.as_array().into_iter().flatten().for_each(string);
                match r.method.as_str() {
                    "eth_submitWork" if r.params.is_null() => error_reply(&r.id, MALFORMED_REQUEST),
                    "eth_submitWork" => submit(&r.id, &r.params),
                    "eth_getWork" | "eth_getBlockByNumber" | "eth_submitHashrate" => {
                        ok_reply(&r.id, json!(true));
                    }
                    _ => error_reply(&r.id, METHOD_NOT_FOUND),
                }
            }
            BodyItem::NoId => {}
            BodyItem::Invalid(id, e) => {
                assert_eq!(e, MALFORMED_REQUEST);
                error_reply(&id, e);
            }
            BodyItem::Malformed => error_reply(&Value::Null, MALFORMED_REQUEST),
        }
    }
}

/// Lines as `LinesCodec` yields them (`\r\n` or `\n`), minus those the servers skip: blank
/// ones and non-UTF-8 ones (the codec answers those itself, before any parser).
fn lines(data: &[u8]) -> impl Iterator<Item = &str> {
    data.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter(|l| !l.trim().is_empty())
}

fn ethproxy_request(req: &Request) {
    req.params.as_array().into_iter().flatten().for_each(string);
    let id = &req.id;
    match Method::parse(req) {
        Err(e) => {
            assert_eq!(req.method, "eth_submitLogin");
            assert!(e == INVALID_PARAMS || e == INVALID_LOGIN, "{e:?}");
            error_reply(id, e);
        }
        Ok(Method::SubmitLogin { login, worker }) => {
            let first = req.params[0].as_str().expect("a login is a string param");
            assert_eq!(Ok((login, worker)), parse_login(first));
            ok_reply(id, json!(true));
        }
        Ok(Method::SubmitWork(params)) => {
            assert_eq!(params, req.params);
            submit(id, &params);
        }
        Ok(Method::GetWork | Method::SubmitHashrate) => ok_reply(id, json!(true)),
        Ok(Method::Unknown(m)) => {
            assert_eq!(m, req.method);
            assert!(!matches!(
                m.as_str(),
                "eth_submitLogin" | "eth_getWork" | "eth_submitWork" | "eth_submitHashrate"
            ));
            error_reply(id, METHOD_NOT_FOUND);
        }
    }
}

/// `Submit::from_params` agrees with the patterns, and a share round-trips to the hex sent.
fn submit(id: &Value, params: &Value) {
    let lower_hex = |v: &Value, digits: usize| {
        v.as_str().is_some_and(|s| {
            s.len() == digits + 2
                && s.starts_with("0x")
                && s.bytes()
                    .skip(2)
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    };
    let expected = match params.as_array() {
        Some(a) if a.len() == 3 && a.iter().all(Value::is_string) => {
            if lower_hex(&a[0], 16) && lower_hex(&a[1], 64) && lower_hex(&a[2], 64) {
                Ok(())
            } else {
                Err(Verdict::Malformed)
            }
        }
        _ => Err(Verdict::InvalidParams),
    };
    match Submit::from_params(params) {
        Ok(s) => {
            assert_eq!(expected, Ok(()), "{params}");
            assert_eq!(params, &json!(s.params));
            assert_eq!(nonce_hex(s.nonce), s.params[0]);
            assert_eq!(to_hex(&s.header), s.params[1]);
            assert_eq!(to_hex(&s.mix), s.params[2]);
        }
        Err(v) => {
            assert_eq!(expected, Err(v), "{params}");
            error_reply(id, v.reply().expect_err("a bad submit is an error"));
        }
    }
}

/// A string param through the session-free helpers.
fn string(v: &Value) {
    if let Some(s) = v.as_str() {
        strings(s);
    }
}

/// The hex and login helpers on one string: what they accept prints back the same.
fn strings(s: &str) {
    // The `0x`/`0X` prefix and digits of either case are accepted, printed lowercase `0x`.
    let canonical = || {
        s.get(2..)
            .map(|d| format!("0x{}", d.to_ascii_lowercase()))
            .expect("accepted hex has a prefix")
    };
    if let Ok(n) = parse_nonce(s) {
        assert_eq!(nonce_hex(n), canonical());
    }
    if let Ok(h) = parse_h256(s, "fuzz") {
        assert_eq!(to_hex(&h), canonical());
    }
    let (addr, suffix) = s.split_once('.').map_or((s, None), |(a, w)| (a, Some(w)));
    match parse_login(s) {
        Ok((login, worker)) => {
            assert!(is_address(&login));
            assert_eq!(login, addr.to_ascii_lowercase());
            assert_eq!(worker.as_deref(), suffix.filter(|w| is_worker(w)));
        }
        Err(e) => {
            assert_eq!(e, INVALID_LOGIN);
            assert!(!is_address(addr));
        }
    }
}

/// One reply line: a single line of JSON.
fn json_line(line: &str) -> Value {
    assert!(!line.contains(['\n', '\r']), "reply spans lines: {line:?}");
    serde_json::from_str(line).expect("a reply is JSON")
}

/// An EthProxy/HTTP error reply echoes the id and carries the error's code and message.
fn error_reply(id: &Value, e: ErrorReply) {
    let v = json_line(&Response::err(id.clone(), e).to_line());
    assert_eq!(&v["id"], id);
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["result"], Value::Null);
    assert_eq!(v["error"], json!({"code": e.code, "message": e.message}));
}

/// An EthProxy/HTTP success reply echoes the id and the result, with no error.
fn ok_reply(id: &Value, result: Value) {
    let v = json_line(&Response::ok(id.clone(), result.clone()).to_line());
    assert_eq!(&v["id"], id);
    assert_eq!(v["result"], result);
    assert!(v.get("error").is_none());
}

/// A NiceHash session and what the test expects of it.
struct NiceHashModel {
    session: NiceHashSession,
    login: String,
    /// Job ids announced so far, newest last.
    jobs: Vec<String>,
}

impl NiceHashModel {
    /// A session on a `bytes`-byte extranonce, subscribed and authorized with [`WORK`] out.
    fn new(bytes: u8) -> Self {
        let alloc = ExtranonceAllocator::new(bytes);
        // Hold 0 so the session gets 1: a nonzero extranonce shows a wrong shift.
        let _zero = alloc.allocate();
        let extranonce = alloc.allocate().expect("a fresh allocator has room");
        let mut m = Self {
            session: NiceHashSession::new(extranonce, DIFFICULTY),
            login: String::new(),
            jobs: Vec::new(),
        };
        m.handle(Request::parse(r#"{"id":1,"method":"mining.subscribe","params":["fuzz/1.0","EthereumStratum/1.0.0"]}"#).expect("valid"));
        m.handle(
            Request::parse(&format!(
                r#"{{"id":2,"method":"mining.authorize","params":["{LOGIN}.rig1","x"]}}"#
            ))
            .expect("valid"),
        );
        assert_eq!((m.login.as_str(), m.jobs.len()), (LOGIN, 1));
        m
    }

    fn handle(&mut self, req: Request) {
        let id = req.id.clone();
        let method = req.method.clone();
        let params = req.params.as_array().cloned().unwrap_or_default();
        params.iter().for_each(string);
        match self.session.handle(req) {
            Event::Reply { lines, malformed } => {
                assert!(!lines.is_empty());
                for line in &lines {
                    let v = json_line(line);
                    assert_eq!(v["id"], id);
                    let code = match &v["error"] {
                        Value::Null => {
                            assert!(!malformed);
                            assert!(!v["result"].is_null());
                            continue;
                        }
                        e => {
                            let shape = e.as_array().map(Vec::len) == Some(3);
                            assert!(shape && e[1].is_string() && e[2].is_null(), "{e}");
                            e[0].as_i64().expect("an integer code")
                        }
                    };
                    assert!([20, 21, 22, 23, 24, 25, -3].contains(&code), "{code}");
                    assert_eq!(malformed, code == 20 || code == -3, "{line}");
                }
                match method.as_str() {
                    "mining.subscribe" => {
                        let v = json_line(&lines[0]);
                        let hex = self.session.extranonce().hex();
                        assert_eq!(v["result"][1], hex);
                    }
                    "mining.extranonce.subscribe" | "mining.authorize" | "mining.submit" => {}
                    _ => assert_eq!(json_line(&lines[0])["error"][0], -3),
                }
            }
            Event::Authorize {
                id: aid,
                login,
                worker,
            } => {
                assert_eq!(method, "mining.authorize");
                assert_eq!(aid, id);
                let user = params[0].as_str().expect("a user is a string param");
                let (l, w) = parse_login(user).expect("authorize only for a valid login");
                assert_eq!(l, login);
                assert_eq!(w.unwrap_or_else(|| "0".into()), worker);
                self.login.clone_from(&login);
                let lines = self
                    .session
                    .authorize(aid, login, worker, Some(WORK), Duration::ZERO);
                assert_eq!(
                    json_line(&lines[0]),
                    json!({"id": id, "result": true, "error": null})
                );
                for line in &lines[1..] {
                    let v = json_line(line);
                    if v["method"] == "mining.notify" {
                        let p = &v["params"];
                        let bare = |h: &[u8; 32]| to_hex(h)[2..].to_string();
                        assert_eq!(p[1], bare(&WORK.seed));
                        assert_eq!(p[2], bare(&WORK.header));
                        self.jobs.push(p[0].as_str().expect("a job id").to_string());
                    }
                }
            }
            Event::Submit(share) => {
                assert_eq!(method, "mining.submit");
                assert_eq!(share.id, id);
                assert_eq!(share.login, self.login);
                assert!(is_worker(&share.worker), "{}", share.worker);
                assert_eq!(share.difficulty, DIFFICULTY);
                // The nonce is the extranonce then the miner's digits, whatever their case.
                let part = params[2].as_str().expect("a nonce is a string param");
                let digits = part.strip_prefix("0x").unwrap_or(part);
                let hex = self.session.extranonce().hex();
                assert_eq!(
                    format!("{hex}{}", digits.to_ascii_lowercase()),
                    format!("{:016x}", share.nonce)
                );
                let job = params[1].as_str().expect("a job id is a string param");
                if self.jobs.last().is_some_and(|j| j == job) {
                    assert_eq!(share.header, Some(WORK.header));
                }
                if share.header.is_some() {
                    assert_eq!(share.header, Some(WORK.header));
                    assert!(self.jobs.iter().any(|j| j == job));
                }
                for verdict in VERDICTS {
                    let v = json_line(&share_reply(share.id.clone(), verdict));
                    assert_eq!(v["id"], share.id);
                    assert_eq!(v["result"] == json!(true), verdict.is_valid());
                }
            }
        }
    }
}
