//! Observability endpoints on their own listener (`[metrics] listen`): Prometheus text
//! `/metrics` written by hand from the proxy's counters, `/health` for load balancers and
//! orchestrators, and a small JSON `/stats`.

pub mod histogram;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::pipeline::{Verdict, WriterStats};
use crate::proxy::Context;
use crate::stratum::Dialect;
use crate::verify::Verifier;

pub use histogram::Histogram;

/// The `[metrics]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct MetricsSection {
    /// Serve `/metrics`, `/health` and `/stats`.
    pub enabled: bool,
    /// Listen address; loopback by default, since the endpoints are not authenticated.
    pub listen: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9090".into(),
        }
    }
}

/// Errors of the observability settings.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// `metrics.listen` is not `host:port`.
    #[error("{0:?} is not an address like 127.0.0.1:9090")]
    Listen(String),
}

impl MetricsSection {
    /// The address to bind, or `None` when disabled (`enabled = false` or `listen = "off"`).
    pub fn addr(&self) -> Result<Option<SocketAddr>, ObserveError> {
        if !self.enabled || self.listen == "off" {
            return Ok(None);
        }
        self.listen
            .parse()
            .map(Some)
            .map_err(|_| ObserveError::Listen(self.listen.clone()))
    }
}

/// What the endpoints read; everything is shared with the running proxy, nothing is copied.
#[derive(Debug)]
pub struct Observe {
    ctx: Arc<Context>,
    verifier: Verifier,
    writer: Arc<WriterStats>,
    started: Instant,
}

impl Observe {
    /// State over the proxy's context, its verifier and the share writer's statistics.
    pub fn new(ctx: Arc<Context>, verifier: Verifier, writer: Arc<WriterStats>) -> Self {
        Self {
            ctx,
            verifier,
            writer,
            started: Instant::now(),
        }
    }

    /// Why the proxy cannot take shares now, or `None` when it can.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.verifier.ready() {
            Some("verifier not ready")
        } else if self.ctx.upstreams.template().is_none() {
            Some("no block template yet")
        } else if self.ctx.upstreams.is_sick() {
            Some("sick: too many consecutive upstream or storage failures")
        } else {
            None
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn metrics(&self) -> String {
        let mut m = Metrics::default();
        let counters = self.ctx.pipeline.counters();
        m.family(
            "dagproxy_shares_total",
            "counter",
            "Submitted shares by verdict since start.",
        );
        for (verdict, n) in counters.snapshot() {
            m.sample("dagproxy_shares_total", &[("verdict", verdict)], n);
        }
        m.one(
            "dagproxy_blocks_found_total",
            "counter",
            "Blocks found, accepted by the node and recorded.",
            counters.get(Verdict::Block),
        );
        m.one(
            "dagproxy_redis_write_errors_total",
            "counter",
            "Failed Redis round trips of the share writer (share batches and blocks).",
            self.writer.errors.load(Ordering::Relaxed),
        );
        m.family(
            "dagproxy_redis_info",
            "gauge",
            "The Redis written to (with sentinels: the master they named last).",
        );
        let redis = self.ctx.pipeline.store().address();
        m.sample("dagproxy_redis_info", &[("addr", &redis)], 1);
        if let Some(n) = self.ctx.pipeline.store().sentinel_failures() {
            m.one(
                "dagproxy_redis_sentinel_failed_lookups",
                "gauge",
                "Master lookups in a row that no sentinel answered (0 while they answer).",
                n,
            );
        }
        m.family(
            "dagproxy_redis_write_batch_size",
            "histogram",
            "Shares per Redis round trip of the share writer.",
        );
        self.writer
            .batch_sizes
            .write(&mut m.0, "dagproxy_redis_write_batch_size");
        m.family(
            "dagproxy_redis_write_seconds",
            "histogram",
            "Time of each share batch's Redis round trip (the write script included).",
        );
        self.writer
            .batch_seconds
            .write(&mut m.0, "dagproxy_redis_write_seconds");
        m.family(
            "dagproxy_share_seconds",
            "histogram",
            "Time from a well-formed submission to its verdict: verification and storage.",
        );
        self.ctx
            .pipeline
            .latency()
            .write(&mut m.0, "dagproxy_share_seconds");

        let backend = self.verifier.backend();
        m.family(
            "dagproxy_verifier_info",
            "gauge",
            "Verifier backend and device in use (changes when auto falls back to the CPU).",
        );
        // Backend names are "cpu", "cpu-light" or "opencl (<device>, <platform>)".
        let (kind, device) = match backend.split_once(" (") {
            Some((kind, device)) => (kind, device.strip_suffix(')').unwrap_or(device)),
            None => (backend.as_str(), "host"),
        };
        m.sample(
            "dagproxy_verifier_info",
            &[("backend", kind), ("device", device)],
            1,
        );
        m.one(
            "dagproxy_verifier_ready",
            "gauge",
            "1 while the verifier takes shares.",
            u64::from(self.verifier.ready()),
        );
        m.one(
            "dagproxy_verifier_pending",
            "gauge",
            "Shares queued in or being hashed by the verifier.",
            self.verifier.pending() as u64,
        );
        m.one(
            "dagproxy_verify_runtime_shares_total",
            "counter",
            "Shares hashed on the async runtime from a DAG in RAM; the rest go to the verifier thread.",
            self.verifier.runtime_shares(),
        );
        m.family(
            "dagproxy_verify_batch_size",
            "histogram",
            "Shares per verifier batch.",
        );
        self.verifier
            .batch_sizes()
            .write(&mut m.0, "dagproxy_verify_batch_size");
        m.family(
            "dagproxy_verify_batch_seconds",
            "histogram",
            "Hashing time per verifier batch (queue wait excluded).",
        );
        self.verifier
            .batch_seconds()
            .write(&mut m.0, "dagproxy_verify_batch_seconds");
        m.family(
            "dagproxy_dag_epoch",
            "gauge",
            "Epochs the verifier holds, by mode: full (dataset ready), building, light.",
        );
        let resident = self.verifier.resident();
        for r in &resident {
            let epoch = r.epoch.to_string();
            m.sample(
                "dagproxy_dag_epoch",
                &[("epoch", &epoch), ("mode", r.mode)],
                1,
            );
        }
        m.family(
            "dagproxy_dag_progress",
            "gauge",
            "Share of each resident epoch's dataset generated, 0 to 1 (0 on the light path).",
        );
        for r in &resident {
            let epoch = r.epoch.to_string();
            m.sample_f64("dagproxy_dag_progress", &[("epoch", &epoch)], r.progress);
        }

        let up = &self.ctx.upstreams;
        let node = up.current();
        m.family(
            "dagproxy_upstream_info",
            "gauge",
            "The upstream node in use.",
        );
        let index = up.current_index().to_string();
        m.sample(
            "dagproxy_upstream_info",
            &[("name", &node.name), ("url", &node.url), ("index", &index)],
            1,
        );
        m.one(
            "dagproxy_upstream_failures",
            "gauge",
            "Consecutive failed template refreshes of the upstream in use.",
            up.failures(),
        );
        m.one(
            "dagproxy_sick",
            "gauge",
            "1 while maxFails consecutive upstream or storage failures stop handing out work.",
            u64::from(up.is_sick()),
        );
        let template = up.template();
        m.one(
            "dagproxy_template_height",
            "gauge",
            "Height of the current block template (0 without one).",
            template.as_ref().map_or(0, |t| t.height),
        );
        m.family(
            "dagproxy_template_difficulty",
            "gauge",
            "Block difficulty of the current template (0 without one).",
        );
        let difficulty = template.as_ref().map_or(0.0, |t| f64::from(t.difficulty));
        m.sample_f64("dagproxy_template_difficulty", &[], difficulty);
        m.family(
            "dagproxy_stratum_sessions",
            "gauge",
            "Open Stratum sessions by dialect (ethproxy, ethereumstratum).",
        );
        for d in Dialect::ALL {
            let n = self.ctx.sessions.count(d);
            m.sample("dagproxy_stratum_sessions", &[("dialect", d.name())], n);
        }
        m.one(
            "dagproxy_share_difficulty",
            "gauge",
            "Configured share difficulty.",
            self.ctx.pipeline.difficulty(),
        );
        m.one(
            "dagproxy_uptime_seconds",
            "gauge",
            "Seconds since the observability server started.",
            self.started.elapsed().as_secs(),
        );
        m.0
    }

    /// The `/stats` document.
    pub fn stats(&self) -> Value {
        let up = &self.ctx.upstreams;
        let template = up.template();
        let shares: serde_json::Map<String, Value> = self
            .ctx
            .pipeline
            .counters()
            .snapshot()
            .into_iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "height": template.as_ref().map(|t| t.height),
            "difficulty": template.as_ref().map(|t| t.difficulty.to_string()),
            "shareDifficulty": self.ctx.pipeline.difficulty(),
            "upstream": up.current().name,
            "sick": up.is_sick(),
            "backend": self.verifier.backend(),
            "dag": self.verifier.resident(),
            "sessions": Dialect::ALL.iter().map(|d| self.ctx.sessions.count(*d)).sum::<u64>(),
            "sessionsByDialect": Dialect::ALL
                .iter()
                .map(|d| (d.name().to_string(), json!(self.ctx.sessions.count(*d))))
                .collect::<serde_json::Map<_, _>>(),
            "shares": shares,
            "ready": self.not_ready().is_none(),
            "uptime": self.started.elapsed().as_secs(),
        })
    }
}

/// The observability application.
pub fn app(state: Arc<Observe>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/stats", get(stats))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<Observe>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics(),
    )
        .into_response()
}

async fn health(State(s): State<Arc<Observe>>) -> Response {
    match s.not_ready() {
        None => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": reason})),
        )
            .into_response(),
    }
}

async fn stats(State(s): State<Arc<Observe>>) -> Json<Value> {
    Json(s.stats())
}

/// A Prometheus text exposition being written.
#[derive(Debug, Default)]
struct Metrics(String);

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.0.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.0.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{k}=\"{}\"", escape(v));
        }
        self.0.push('}');
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.labels(name, labels);
        let _ = writeln!(self.0, " {value}");
    }

    fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.labels(name, labels);
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Label values escape backslash, double quote and newline (text format 0.0.4).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut m = Metrics::default();
        m.sample("x", &[("a", "q\"b\\s\nn"), ("b", "plain")], 3);
        assert_eq!(m.0, "x{a=\"q\\\"b\\\\s\\nn\",b=\"plain\"} 3\n");
    }

    #[test]
    fn listen_off_and_bad_addresses() {
        let mut s = MetricsSection::default();
        assert_eq!(
            s.addr().expect("default parses"),
            Some("127.0.0.1:9090".parse().expect("addr"))
        );
        s.listen = "off".into();
        assert_eq!(s.addr().expect("off"), None);
        s.listen = "localhost".into();
        assert!(s.addr().is_err());
    }

    #[test]
    fn metrics_section_parses_in_the_config_file() {
        let c: crate::config::Config =
            toml::from_str("[metrics]\nlisten = \"0.0.0.0:9100\"\n").expect("config parses");
        assert_eq!(
            c.metrics.addr().expect("valid"),
            Some("0.0.0.0:9100".parse().expect("addr"))
        );
        let c: crate::config::Config =
            toml::from_str("[metrics]\nenabled = false\n").expect("config parses");
        assert_eq!(c.metrics.addr().expect("valid"), None);
        assert!(toml::from_str::<crate::config::Config>("[metrics]\nport = 1\n").is_err());
    }
}
