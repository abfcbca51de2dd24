//! The embedded dev chain over real HTTP: geth-shaped replies, honest eth_submitWork (real
//! hashimoto), timer advance, and malformed requests answered with JSON-RPC errors.

use std::time::Duration;

use dagproxy::devnet::{self, DevnetConfig, DevnetHandle};
use dagproxy::ethash::target::{target_from_difficulty, target_hex};
use dagproxy::ethash::{hashimoto, ChainSpec, FullDataset, LightCache, PowInput, U256};
use dagproxy::hexutil::{nonce_hex, parse_h256, to_hex};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Node {
    url: String,
    handle: DevnetHandle,
    http: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

async fn start(difficulty: u64, block_time: Duration, start_block: u64) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let cfg = DevnetConfig {
        chain: ChainSpec::test(),
        difficulty: U256::from(difficulty),
        block_time,
        start_block,
    };
    let (handle, _task) = devnet::spawn(listener, cfg, stop.clone()).expect("spawn");
    Node {
        url,
        handle,
        http: reqwest::Client::new(),
        _stop: stop.drop_guard(),
    }
}

impl Node {
    async fn raw(&self, body: &str) -> Value {
        self.http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json reply")
    }

    async fn call(&self, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
        let reply = self.raw(&req.to_string()).await;
        assert_eq!(reply["id"], 7, "{reply}");
        reply
    }

    async fn work(&self) -> ([u8; 32], String, String, u64) {
        let r = self.call("eth_getWork", json!([])).await;
        let w = r["result"].as_array().expect("array");
        assert_eq!(w.len(), 4);
        let header = parse_h256(w[0].as_str().expect("str"), "header").expect("header hex");
        let number = u64::from_str_radix(w[3].as_str().expect("str").trim_start_matches("0x"), 16)
            .expect("number hex");
        (
            header,
            w[1].as_str().expect("str").to_string(),
            w[2].as_str().expect("str").to_string(),
            number,
        )
    }

    async fn submit(&self, nonce: u64, header: &[u8; 32], mix: &[u8; 32]) -> Value {
        self.call(
            "eth_submitWork",
            json!([nonce_hex(nonce), to_hex(header), to_hex(mix)]),
        )
        .await["result"]
            .clone()
    }
}

/// Grinds nonces from `start` until one meets (or, with `meet = false`, misses) the target.
fn grind(header: [u8; 32], number: u64, target: U256, start: u64, meet: bool) -> (u64, [u8; 32]) {
    let cache = LightCache::new(ChainSpec::test().epoch_info(number));
    let data = FullDataset::generate(&cache, &|_, _| {});
    let rows = data.rows();
    for nonce in start.. {
        let out = hashimoto(
            &rows,
            &PowInput {
                header_hash: header,
                nonce,
            },
        );
        if (U256::from_be_bytes(out.result) <= target) == meet {
            return (nonce, out.mix_digest);
        }
    }
    unreachable!("u64 nonces exhausted")
}

#[tokio::test]
async fn get_work_and_pending_block_have_geth_shapes() {
    let node = start(1_000_000, Duration::ZERO, 30_005).await;
    let (header, seed, boundary, number) = node.work().await;
    assert_eq!(number, 30_005);
    assert_eq!(header, node.handle.work().header);
    // Epoch 1's seed hash, and the boundary 2^256 / difficulty.
    let info = ChainSpec::test().epoch_info(30_005);
    assert_eq!(info.epoch, 1);
    assert_eq!(seed, to_hex(&info.seed));
    let target = target_from_difficulty(U256::from(1_000_000u64)).expect("target");
    assert_eq!(boundary, target_hex(target));

    let b = node
        .call("eth_getBlockByNumber", json!(["pending", false]))
        .await;
    let block = &b["result"];
    assert_eq!(block["number"], "0x7535");
    assert_eq!(block["difficulty"], "0xf4240");
    assert!(block["hash"].is_null(), "{block}");
    let latest = node
        .call("eth_getBlockByNumber", json!(["latest", false]))
        .await;
    assert_eq!(latest["result"]["number"], "0x7534");
    assert_eq!(
        node.call("eth_blockNumber", json!([])).await["result"],
        "0x7534"
    );
}

#[tokio::test]
async fn ground_solution_is_accepted_and_advances_height() {
    let node = start(2_000, Duration::ZERO, 0).await;
    let (header, _, _, number) = node.work().await;
    let target = target_from_difficulty(U256::from(2_000u64)).expect("target");
    let (nonce, mix) = grind(header, number, target, 0, true);

    assert_eq!(node.submit(nonce, &header, &mix).await, json!(true));
    assert_eq!(node.handle.height(), number + 1);
    let (next_header, _, _, next_number) = node.work().await;
    assert_eq!(next_number, number + 1);
    assert_ne!(next_header, header);
    let acc = node.handle.accepted();
    assert_eq!(acc.len(), 1);
    assert_eq!(
        (acc[0].number, acc[0].nonce, acc[0].header, acc[0].mix),
        (number, nonce, header, mix)
    );
    // The same solution again seals nothing new.
    assert_eq!(node.submit(nonce, &header, &mix).await, json!(false));
    assert_eq!(node.handle.height(), number + 1);
    assert_eq!(node.handle.submit_calls(), 2);
}

#[tokio::test]
async fn recent_header_is_accepted_stale_wrong_mix_and_low_result_are_not() {
    let node = start(2_000, Duration::ZERO, 100).await;
    let target = target_from_difficulty(U256::from(2_000u64)).expect("target");
    let (h0, _, _, n0) = node.work().await;
    node.handle.advance();
    let (h1, _, _, n1) = node.work().await;

    // Wrong mix for a good nonce: rejected, no advance.
    let (nonce, mix) = grind(h1, n1, target, 0, true);
    let mut bad_mix = mix;
    bad_mix[0] ^= 1;
    assert_eq!(node.submit(nonce, &h1, &bad_mix).await, json!(false));
    // Right mix but the result misses the block target.
    let (weak, weak_mix) = grind(h1, n1, target, 0, false);
    assert_eq!(node.submit(weak, &h1, &weak_mix).await, json!(false));
    assert_eq!(node.handle.height(), n1);
    assert!(node.handle.accepted().is_empty());

    // A header one height back is still in the window (geth keeps recent work).
    let (nonce0, mix0) = grind(h0, n0, target, 0, true);
    assert_eq!(node.submit(nonce0, &h0, &mix0).await, json!(true));
    assert_eq!(node.handle.height(), n1 + 1);

    // Four more heights push h1 out of the window: stale.
    for _ in 0..4 {
        node.handle.advance();
    }
    assert_eq!(node.submit(nonce, &h1, &mix).await, json!(false));
    // An unknown header too.
    assert_eq!(node.submit(nonce, &[9; 32], &mix).await, json!(false));
    assert_eq!(node.handle.accepted().len(), 1);
    assert_eq!(node.handle.submit_calls(), 5);
}

#[tokio::test]
async fn timer_advances_height() {
    let node = start(1_000_000, Duration::from_millis(100), 7).await;
    let first = node.work().await.0;
    tokio::time::timeout(Duration::from_secs(20), node.handle.wait_height(9))
        .await
        .expect("two timer blocks");
    let (header, _, _, number) = node.work().await;
    assert!(number >= 9);
    assert_ne!(header, first);
    assert!(node.handle.accepted().is_empty());
}

#[tokio::test]
async fn malformed_requests_get_json_rpc_errors() {
    let node = start(1_000, Duration::ZERO, 0).await;
    let r = node.raw("{not json").await;
    assert_eq!(r["error"]["code"], -32700, "{r}");
    let r = node.raw("42").await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
    let r = node.raw(r#"{"id":1,"params":[]}"#).await;
    assert_eq!(r["error"]["code"], -32600, "{r}");
    let r = node.call("eth_mining", json!([])).await;
    assert_eq!(r["error"]["code"], -32601, "{r}");
    let r = node
        .call("eth_submitWork", json!(["0x12", "0x34", "0x56"]))
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = node.call("eth_submitWork", json!([1, 2, 3])).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    let r = node
        .raw(r#"{"id":3,"method":"eth_getWork","params":{}}"#)
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    // Batches are answered element by element.
    let r = node
        .raw(r#"[{"id":1,"method":"eth_getWork"},{"id":2,"method":"nope"}]"#)
        .await;
    assert_eq!(r[0]["result"].as_array().map(Vec::len), Some(4), "{r}");
    assert_eq!(r[1]["error"]["code"], -32601, "{r}");
    // Still serving.
    assert_eq!(node.work().await.3, 0);
    assert_eq!(node.handle.submit_calls(), 0);
}

#[test]
fn cli_serves_until_interrupted_and_rejects_bad_arguments() {
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_dagproxy");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let mut child = Command::new(bin)
        .args(["devnet", "--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--difficulty",
            "0x10000",
            "--block-time",
            "0",
            "--start-block",
            "5",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn devnet");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let reply: Value = rt.block_on(async {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/"))
                .body(r#"{"jsonrpc":"2.0","id":1,"method":"eth_getWork","params":[]}"#)
                .send()
                .await;
            if let Ok(r) = r {
                return r.json().await.expect("json");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "devnet did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(reply["result"][3], "0x5");
    let target = target_from_difficulty(U256::from(0x10000u64)).expect("target");
    assert_eq!(reply["result"][2], target_hex(target));
    // Ctrl-C (SIGINT) stops it cleanly.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let code = child.wait().expect("wait");
    assert_eq!(code.code(), Some(0));

    for bad in [
        vec!["devnet", "--chain", "nope"],
        vec!["devnet", "--listen", "not-an-address"],
    ] {
        let out = Command::new(bin).args(&bad).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
    }
    let out = Command::new(bin)
        .args(["devnet", "--difficulty", "0", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("difficulty"), "{err}");
}
