//! Test harness shared by the integration tests: a real `redis-server` on a free port, and
//! running the CLI for its JSON.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process on 127.0.0.1, killed on drop.
pub struct RedisServer {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    dir: PathBuf,
}

impl RedisServer {
    /// Spawns `redis-server` on a free port with no persistence and waits until it answers.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Spawns `redis-server` on `port` (used to restart one on the same port).
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Spawns `redis-server` on `port` with more arguments (`--replicaof HOST PORT`, …).
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("dagproxy-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis temp dir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (deploy/test.sh installs it)");
        let server = Self { child, port, dir };
        server.wait_ready();
        server
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(client) = redis::Client::open(self.url()) {
                if let Ok(mut con) = client.get_connection() {
                    if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// A synchronous connection for assertions.
    pub fn con(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .expect("url")
            .get_connection()
            .expect("connect to test redis")
    }

    /// Kills the server (to test outages); `start_on(self.port)` brings one back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port that was free a moment ago (for child processes that must bind it themselves).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind port 0")
}

/// A Redis Sentinel (`redis-server --sentinel`) on a free port watching one master as
/// `mymaster` with quorum 1 and quick timeouts, killed on drop.
pub struct RedisSentinel {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    dir: PathBuf,
}

impl RedisSentinel {
    /// Starts watching the master on `master_port` (down after 500 ms of silence).
    pub fn start(master_port: u16) -> Self {
        Self::start_on(free_port(), master_port)
    }

    /// [`RedisSentinel::start`] on a given port (one a stopped sentinel had, say).
    pub fn start_on(port: u16, master_port: u16) -> Self {
        let dir =
            std::env::temp_dir().join(format!("dagproxy-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("sentinel temp dir");
        // Sentinel rewrites its config file, so it gets one of its own.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 500\n\
                 sentinel failover-timeout mymaster 3000\n",
                dir.display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (deploy/test.sh installs it)");
        let sentinel = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if sentinel.query::<String>(&mut redis::cmd("PING")).is_some() {
                return sentinel;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("sentinel on port {port} did not answer");
    }

    /// A command to the sentinel, `None` if it fails.
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> Option<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).ok()?;
        let mut con = client.get_connection().ok()?;
        cmd.query(&mut con).ok()
    }

    /// Waits until the sentinel has found a replica of the master that is up (a failover
    /// needs one).
    pub fn wait_for_replica(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let replicas: Option<Vec<std::collections::HashMap<String, String>>> =
                self.query(redis::cmd("SENTINEL").arg("replicas").arg("mymaster"));
            let up = replicas.unwrap_or_default().iter().any(|r| {
                r.get("flags").map(String::as_str) == Some("slave")
                    && r.get("master-link-status").map(String::as_str) == Some("ok")
            });
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sentinel found no replica");
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a CLI command, which must succeed, and parses its standard output as JSON.
pub fn json_of(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}
