//! EthereumStratum/1.0.0 (the NiceHash dialect), sans-IO: the per-session extranonce
//! allocator, the NiceHash difficulty convention, the messages, and a session state machine
//! (subscribe, authorize, extranonce.subscribe, set_difficulty, notify, submit) that turns
//! requests into reply lines and shares for the pipeline. No socket and no pipeline here.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::message::Request;
use super::method::{is_worker, parse_login, DEFAULT_WORKER};
use crate::hexutil::to_hex;
use crate::pipeline::Verdict;
use crate::vardiff::{SessionDiff, VardiffConfig};

/// Hashes per share at NiceHash difficulty 1 (2^32).
pub const DIFF1_HASHES: f64 = 4_294_967_296.0;
/// The protocol name in `mining.subscribe`.
pub const PROTOCOL: &str = "EthereumStratum/1.0.0";
/// Jobs a session remembers for submits (more than the three-height stale window).
const JOBS: usize = 8;

/// A share difficulty in hashes as a NiceHash difficulty (the only conversion to it).
pub fn to_nicehash(hashes: u64) -> f64 {
    hashes as f64 / DIFF1_HASHES
}

/// A NiceHash difficulty as hashes per share (the only conversion from it); `None` unless
/// positive, finite and at least one hash.
pub fn from_nicehash(difficulty: f64) -> Option<u64> {
    let hashes = (difficulty * DIFF1_HASHES).round();
    (difficulty.is_finite() && hashes >= 1.0 && hashes < u64::MAX as f64).then_some(hashes as u64)
}

/// Hands out extranonces of `bytes` bytes, unique among live sessions.
#[derive(Debug)]
pub struct ExtranonceAllocator {
    bytes: u8,
    state: Mutex<AllocState>,
}

#[derive(Debug, Default)]
struct AllocState {
    next: u32,
    used: HashSet<u32>,
}

impl ExtranonceAllocator {
    /// An allocator of `bytes`-byte extranonces (1 to 3; the miner keeps the rest of the 8).
    pub fn new(bytes: u8) -> Arc<Self> {
        Arc::new(Self {
            bytes: bytes.clamp(1, 3),
            state: Mutex::default(),
        })
    }

    /// How many sessions can hold one at once.
    pub fn capacity(&self) -> u32 {
        1 << (8 * u32::from(self.bytes))
    }

    /// A fresh extranonce, freed when dropped; `None` when all are in use.
    pub fn allocate(self: &Arc<Self>) -> Option<Extranonce> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cap = self.capacity();
        if s.used.len() as u64 >= u64::from(cap) {
            return None;
        }
        // Round robin, so a just-freed value is not reused at once.
        loop {
            let v = s.next;
            s.next = (s.next + 1) % cap;
            if s.used.insert(v) {
                return Some(Extranonce {
                    value: v,
                    bytes: self.bytes,
                    owner: self.clone(),
                });
            }
        }
    }

    fn release(&self, v: u32) {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .used
            .remove(&v);
    }
}

/// One session's extranonce: the high bytes of every nonce it submits.
#[derive(Debug)]
pub struct Extranonce {
    value: u32,
    bytes: u8,
    owner: Arc<ExtranonceAllocator>,
}

impl Drop for Extranonce {
    fn drop(&mut self) {
        self.owner.release(self.value);
    }
}

impl Extranonce {
    /// As sent in `mining.subscribe`: lowercase hex without `0x`, 2 digits per byte.
    pub fn hex(&self) -> String {
        format!(
            "{:0width$x}",
            self.value,
            width = 2 * usize::from(self.bytes)
        )
    }

    /// The full nonce from the miner's part (hex, optional `0x`, exactly the remaining bytes).
    pub fn nonce(&self, miner_part: &str) -> Option<u64> {
        let part = miner_part.strip_prefix("0x").unwrap_or(miner_part);
        let digits = 2 * (8 - usize::from(self.bytes));
        if part.len() != digits || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let low = u64::from_str_radix(part, 16).ok()?;
        Some((u64::from(self.value) << (8 * (8 - u32::from(self.bytes)))) | low)
    }
}

/// A job as the template gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// Header (pow) hash.
    pub header: [u8; 32],
    /// Seed hash.
    pub seed: [u8; 32],
}

/// A well-formed `mining.submit`, for the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Share {
    /// The request id, for the reply.
    pub id: Value,
    /// Miner address.
    pub login: String,
    /// Worker name.
    pub worker: String,
    /// The job's header, or `None` for an unknown or expired job (stale).
    pub header: Option<[u8; 32]>,
    /// The full nonce (extranonce ‖ miner part).
    pub nonce: u64,
    /// The difficulty (hashes) the job was issued at: checked and credited at it.
    pub difficulty: u64,
}

/// What a request asks of the connection.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Send these lines. `malformed`: the request counts toward the malformed limit.
    Reply {
        /// Lines to send, in order.
        lines: Vec<String>,
        /// Bad params or an unknown method.
        malformed: bool,
    },
    /// A login to vet (blacklist) before [`NiceHashSession::authorize`] or
    /// [`NiceHashSession::refuse`].
    Authorize {
        /// The request id.
        id: Value,
        /// Lowercase address.
        login: String,
        /// Worker.
        worker: String,
    },
    /// Check this share, then answer with [`share_reply`].
    Submit(Share),
}

fn ok(id: Value, result: Value) -> String {
    json!({"id": id, "result": result, "error": null}).to_string()
}

/// An error reply in the Stratum form `[code, message, null]`.
pub fn error(id: Value, code: i32, message: &str) -> String {
    json!({"id": id, "result": null, "error": [code, message, null]}).to_string()
}

/// `mining.set_difficulty` for a difficulty in hashes.
pub fn set_difficulty(hashes: u64) -> String {
    json!({"id": null, "method": "mining.set_difficulty", "params": [to_nicehash(hashes)]})
        .to_string()
}

/// `mining.notify`: job id, seed hash, header hash (hex without `0x`), clean flag.
pub fn notify(job_id: &str, work: &Work, clean: bool) -> String {
    let bare = |h: &[u8; 32]| to_hex(h).trim_start_matches("0x").to_string();
    json!({"id": null, "method": "mining.notify",
           "params": [job_id, bare(&work.seed), bare(&work.header), clean]})
    .to_string()
}

/// The answer to a checked share (codes of the Stratum convention).
pub fn share_reply(id: Value, verdict: Verdict) -> String {
    match verdict {
        Verdict::Valid | Verdict::Block => ok(id, Value::Bool(true)),
        Verdict::Stale => error(id, 21, "Job not found"),
        Verdict::Duplicate => error(id, 22, "Duplicate share"),
        Verdict::LowDifficulty | Verdict::MixMismatch => error(id, 23, "Low difficulty share"),
        Verdict::Malformed | Verdict::InvalidParams => error(id, 20, "Malformed share"),
        Verdict::Busy => error(id, 20, "Verifier busy, try again"),
        Verdict::StorageDown => error(id, 20, "Share not stored, storage unavailable"),
    }
}

/// One EthereumStratum/1.0.0 session.
#[derive(Debug)]
pub struct NiceHashSession {
    extranonce: Extranonce,
    subscribed: bool,
    auth: Option<(String, String)>,
    difficulty: u64,
    vardiff: Option<SessionDiff>,
    jobs: VecDeque<(String, [u8; 32])>,
    next_job: u64,
    last_header: Option<[u8; 32]>,
}

impl NiceHashSession {
    /// A session holding `extranonce`, with shares of `difficulty` hashes.
    pub fn new(extranonce: Extranonce, difficulty: u64) -> Self {
        Self {
            extranonce,
            subscribed: false,
            auth: None,
            difficulty,
            vardiff: None,
            jobs: VecDeque::with_capacity(JOBS),
            next_job: 0,
            last_header: None,
        }
    }

    /// Turns on vardiff (starting at the session's difficulty): a retarget is announced with
    /// `mining.set_difficulty` just before the next `mining.notify`.
    pub fn with_vardiff(mut self, config: VardiffConfig, now: Duration) -> Self {
        self.vardiff = Some(SessionDiff::new(config, self.difficulty, now));
        self
    }

    /// Counts a checked share toward vardiff.
    pub fn record(&mut self, verdict: Verdict) {
        if let (Some(v), true) = (&mut self.vardiff, verdict.is_valid()) {
            v.record_share();
        }
    }

    /// The session's extranonce.
    pub fn extranonce(&self) -> &Extranonce {
        &self.extranonce
    }

    /// The authorized login and worker.
    pub fn auth(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(l, w)| (l.as_str(), w.as_str()))
    }

    /// Handles one request.
    pub fn handle(&mut self, req: Request) -> Event {
        let reply = |lines: Vec<String>| Event::Reply {
            lines,
            malformed: false,
        };
        let bad = |line: String| Event::Reply {
            lines: vec![line],
            malformed: true,
        };
        let id = req.id;
        let params = req.params.as_array().cloned().unwrap_or_default();
        let str_at = |i: usize| params.get(i).and_then(Value::as_str);
        match req.method.as_str() {
            "mining.subscribe" => {
                self.subscribed = true;
                let session_id = format!("{}{:016x}", self.extranonce.hex(), self.next_job);
                reply(vec![ok(
                    id,
                    json!([
                        ["mining.notify", session_id, PROTOCOL],
                        self.extranonce.hex()
                    ]),
                )])
            }
            "mining.extranonce.subscribe" => reply(vec![ok(id, Value::Bool(true))]),
            "mining.authorize" => {
                if !self.subscribed {
                    return reply(vec![error(id, 25, "Not subscribed")]);
                }
                let Some(user) = str_at(0) else {
                    return bad(error(id, 20, "Invalid params"));
                };
                match parse_login(user) {
                    Ok((login, worker)) => Event::Authorize {
                        id,
                        login,
                        worker: worker.unwrap_or_else(|| DEFAULT_WORKER.to_string()),
                    },
                    Err(_) => reply(vec![error(id, 24, "Invalid login")]),
                }
            }
            "mining.submit" => {
                let Some((login, worker)) = self.auth.clone() else {
                    return reply(vec![error(id, 24, "Unauthorized worker")]);
                };
                let (Some(name), Some(job), Some(part)) = (str_at(0), str_at(1), str_at(2)) else {
                    return bad(error(id, 20, "Invalid params"));
                };
                let Some(nonce) = self.extranonce.nonce(part) else {
                    return bad(error(id, 20, "Malformed nonce"));
                };
                // `address.worker` in the submit names the worker, as in authorize.
                let worker = name
                    .split_once('.')
                    .map(|(_, w)| w)
                    .filter(|w| is_worker(w))
                    .map_or(worker, str::to_string);
                let header = self.jobs.iter().find(|(j, _)| j == job).map(|(_, h)| *h);
                let difficulty = match (&self.vardiff, &header) {
                    (Some(v), Some(h)) => v.for_share(h),
                    _ => self.difficulty,
                };
                Event::Submit(Share {
                    id,
                    login,
                    worker,
                    header,
                    nonce,
                    difficulty,
                })
            }
            _ => bad(error(id, -3, "Method not found")),
        }
    }

    /// Completes an authorize: the reply, then the difficulty and the current job if any.
    pub fn authorize(
        &mut self,
        id: Value,
        login: String,
        worker: String,
        work: Option<Work>,
        now: Duration,
    ) -> Vec<String> {
        self.auth = Some((login, worker));
        let mut lines = vec![ok(id, Value::Bool(true))];
        self.last_header = None;
        match work {
            Some(w) => lines.extend(self.job(w, now)),
            None => lines.push(set_difficulty(self.difficulty)),
        }
        lines
    }

    /// Refuses an authorize.
    pub fn refuse(id: Value, message: &str) -> String {
        error(id, 24, message)
    }

    /// The `mining.notify` for `work` if the session is authorized and has not had it,
    /// preceded by `mining.set_difficulty` when this job's difficulty is new (or first).
    pub fn job(&mut self, work: Work, now: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        if self.auth.is_none() || self.last_header == Some(work.header) {
            return lines;
        }
        let first = self.last_header.is_none();
        self.last_header = Some(work.header);
        if let Some(v) = &mut self.vardiff {
            let d = v.issue(work.header, now);
            if d != self.difficulty || first {
                self.difficulty = d;
                lines.push(set_difficulty(d));
            }
        } else if first {
            lines.push(set_difficulty(self.difficulty));
        }
        let id = format!("{:08x}", self.next_job);
        self.next_job += 1;
        if self.jobs.len() == JOBS {
            self.jobs.pop_front();
        }
        self.jobs.push_back((id.clone(), work.header));
        // A new header makes older work worthless for blocks: always clean.
        lines.push(notify(&id, &work, true));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN: &str = "0xb85150eb365e7df0941f0cf08235f987ba91506a";

    fn req(id: u64, method: &str, params: Value) -> Request {
        Request {
            id: json!(id),
            method: method.into(),
            params,
            worker: None,
        }
    }

    fn parse(line: &str) -> Value {
        serde_json::from_str(line).expect("json line")
    }

    #[test]
    fn nicehash_difficulty_convention() {
        assert_eq!(to_nicehash(1 << 32), 1.0);
        assert_eq!(to_nicehash(1 << 31), 0.5);
        assert_eq!(from_nicehash(1.0), Some(1 << 32));
        assert_eq!(from_nicehash(0.5), Some(1 << 31));
        // open-ethereum-pool's default share difficulty.
        let d = to_nicehash(2_000_000_000);
        assert!((d - 0.465_661_287_307_739_26).abs() < 1e-15, "{d}");
        assert_eq!(from_nicehash(d), Some(2_000_000_000));
        for h in [1u64, 3, 1_000, 4_000_000_000, 1 << 40, 123_456_789_012_345] {
            assert_eq!(from_nicehash(to_nicehash(h)), Some(h));
        }
        assert_eq!(from_nicehash(0.0), None);
        assert_eq!(from_nicehash(-1.0), None);
        assert_eq!(from_nicehash(f64::NAN), None);
        assert_eq!(from_nicehash(f64::INFINITY), None);
    }

    #[test]
    fn extranonces_are_unique_across_1000_sessions_and_reused_after_release() {
        let alloc = ExtranonceAllocator::new(2);
        let live: Vec<Extranonce> = (0..1000).map(|_| alloc.allocate().expect("room")).collect();
        let hexes: HashSet<String> = live.iter().map(Extranonce::hex).collect();
        assert_eq!(hexes.len(), 1000);
        assert!(hexes.iter().all(|h| h.len() == 4));
        drop(live);
        // All freed: a full set of 65536 fits, then none.
        let all: Vec<Extranonce> = (0..alloc.capacity())
            .map(|_| alloc.allocate().expect("room"))
            .collect();
        assert!(alloc.allocate().is_none());
        let unique: HashSet<u32> = all.iter().map(|e| e.value).collect();
        assert_eq!(unique.len(), 65_536);
        drop(all);
        assert!(alloc.allocate().is_some());
    }

    #[test]
    fn nonce_is_extranonce_then_miner_part() {
        let alloc = ExtranonceAllocator::new(2);
        let _skip = alloc.allocate();
        let e = alloc.allocate().expect("room");
        assert_eq!(e.hex(), "0001");
        assert_eq!(e.nonce("23456789abcd"), Some(0x0001_2345_6789_abcd));
        assert_eq!(e.nonce("0x23456789ABCD"), Some(0x0001_2345_6789_abcd));
        assert_eq!(e.nonce("23456789abc"), None);
        assert_eq!(e.nonce("000123456789abcd"), None);
        assert_eq!(e.nonce("23456789abcg"), None);
    }

    #[test]
    fn a_session_from_subscribe_to_submit() {
        let alloc = ExtranonceAllocator::new(2);
        let mut s = NiceHashSession::new(alloc.allocate().expect("room"), 1 << 31);
        // Submit before authorize.
        let Event::Reply { lines, .. } = s.handle(req(1, "mining.submit", json!([]))) else {
            panic!("reply expected");
        };
        assert_eq!(parse(&lines[0])["error"][0], json!(24));
        // Authorize before subscribe.
        let Event::Reply { lines, .. } = s.handle(req(2, "mining.authorize", json!([LOGIN])))
        else {
            panic!("reply expected");
        };
        assert_eq!(parse(&lines[0])["error"][0], json!(25));
        let Event::Reply { lines, malformed } =
            s.handle(req(3, "mining.subscribe", json!(["miner/1.0", PROTOCOL])))
        else {
            panic!("reply expected");
        };
        assert!(!malformed);
        let r = parse(&lines[0]);
        assert_eq!(r["result"][0][0], json!("mining.notify"));
        assert_eq!(r["result"][0][2], json!(PROTOCOL));
        assert_eq!(r["result"][1], json!("0000"));
        assert_eq!(r["error"], Value::Null);
        let ev = s.handle(req(4, "mining.extranonce.subscribe", json!([])));
        assert!(matches!(
            ev,
            Event::Reply {
                malformed: false,
                ..
            }
        ));
        let ev = s.handle(req(
            5,
            "mining.authorize",
            json!([format!("{LOGIN}.rig7"), "x"]),
        ));
        let Event::Authorize { id, login, worker } = ev else {
            panic!("authorize expected: {ev:?}");
        };
        assert_eq!((login.as_str(), worker.as_str()), (LOGIN, "rig7"));
        let work = Work {
            header: [0xab; 32],
            seed: [0x01; 32],
        };
        let lines = s.authorize(id, login, worker, Some(work), Duration::ZERO);
        assert_eq!(parse(&lines[0])["result"], json!(true));
        assert_eq!(
            parse(&lines[1]),
            json!({"id": null, "method": "mining.set_difficulty", "params": [0.5]})
        );
        let n = parse(&lines[2]);
        assert_eq!(n["method"], json!("mining.notify"));
        assert_eq!(
            n["params"],
            json!(["00000000", "01".repeat(32), "ab".repeat(32), true])
        );
        // The same header is not announced twice; a new one gets a new id.
        assert_eq!(s.job(work, Duration::ZERO), Vec::<String>::new());
        let work2 = Work {
            header: [0xcd; 32],
            ..work
        };
        let n2 = s.job(work2, Duration::ZERO);
        assert_eq!(n2.len(), 1, "no difficulty change: notify only");
        let n2 = parse(&n2[0]);
        assert_eq!(n2["params"][0], json!("00000001"));

        let ev = s.handle(req(
            6,
            "mining.submit",
            json!([LOGIN, "00000000", "0000000000ff"]),
        ));
        assert_eq!(
            ev,
            Event::Submit(Share {
                id: json!(6),
                login: LOGIN.into(),
                worker: "rig7".into(),
                header: Some([0xab; 32]),
                nonce: 0xff,
                difficulty: 1 << 31,
            })
        );
        // Unknown job: no header (stale).
        let Event::Submit(share) = s.handle(req(
            7,
            "mining.submit",
            json!([LOGIN, "0000beef", "0000000000ff"]),
        )) else {
            panic!("submit expected");
        };
        assert_eq!(share.header, None);
        // Bad nonce and unknown methods count as malformed.
        let ev = s.handle(req(8, "mining.submit", json!([LOGIN, "00000000", "ff"])));
        assert!(matches!(
            ev,
            Event::Reply {
                malformed: true,
                ..
            }
        ));
        let ev = s.handle(req(9, "eth_getWork", json!([])));
        assert!(matches!(
            ev,
            Event::Reply {
                malformed: true,
                ..
            }
        ));
        // Old jobs expire from the session's book.
        for i in 0..JOBS as u8 {
            s.job(
                Work {
                    header: [i; 32],
                    ..work
                },
                Duration::ZERO,
            );
        }
        let Event::Submit(share) = s.handle(req(
            10,
            "mining.submit",
            json!([LOGIN, "00000000", "0000000000ff"]),
        )) else {
            panic!("submit expected");
        };
        assert_eq!(share.header, None);
    }

    #[test]
    fn vardiff_announces_set_difficulty_before_the_next_job() {
        let alloc = ExtranonceAllocator::new(1);
        let config = VardiffConfig {
            target_time: Duration::from_secs(10),
            retarget_time: Duration::from_secs(1),
            min: 1,
            max: 1 << 40,
            tolerance: 0.25,
        };
        let mut s = NiceHashSession::new(alloc.allocate().expect("room"), 1 << 32)
            .with_vardiff(config, Duration::ZERO);
        let _ = s.handle(req(1, "mining.subscribe", json!([])));
        let w = |b: u8| Work {
            header: [b; 32],
            seed: [0; 32],
        };
        let lines = s.authorize(
            json!(2),
            LOGIN.into(),
            "0".into(),
            Some(w(1)),
            Duration::ZERO,
        );
        assert_eq!(parse(&lines[1])["params"], json!([1.0]));
        for _ in 0..20 {
            s.record(Verdict::Valid);
        }
        s.record(Verdict::Stale);
        let lines = s.job(w(2), Duration::from_secs(2));
        assert_eq!(lines.len(), 2);
        assert_eq!(parse(&lines[0])["params"], json!([2.0]));
        assert_eq!(parse(&lines[1])["method"], json!("mining.notify"));
        // Shares are credited at their job's difficulty.
        let mut sub = |job: &str| match s.handle(req(
            3,
            "mining.submit",
            json!([LOGIN, job, "00000000000001"]),
        )) {
            Event::Submit(share) => share.difficulty,
            other => panic!("submit expected: {other:?}"),
        };
        assert_eq!(sub("00000000"), 1 << 32);
        assert_eq!(sub("00000001"), 1 << 33);
    }

    #[test]
    fn share_replies() {
        assert_eq!(
            parse(&share_reply(json!(1), Verdict::Valid)),
            json!({"id": 1, "result": true, "error": null})
        );
        let code = |v| parse(&share_reply(json!(1), v))["error"][0].clone();
        assert_eq!(code(Verdict::Stale), json!(21));
        assert_eq!(code(Verdict::Duplicate), json!(22));
        assert_eq!(code(Verdict::LowDifficulty), json!(23));
        assert_eq!(code(Verdict::StorageDown), json!(20));
    }
}
