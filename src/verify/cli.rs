//! The verifier's subcommands: `verify` (JSON lines on stdin through the batching service),
//! `devices` (OpenCL platforms and devices) and `bench verify` (throughput and latency per
//! batch size, DAG generation time).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::cli::chain_arg;
use crate::ethash::{ChainSpec, EpochInfo, PowInput, PowOutput};
use crate::hexutil::{parse_h256, parse_nonce, to_hex};

use super::backend::{Backend, Caches};
use super::{Verifier, VerifierConfig, VerifierKind, VerifyError};

/// Errors of the verifier subcommands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The verifier could not start or failed.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Reading stdin or writing stdout.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// Output encoding.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Options shared by `verify` and `bench verify`.
#[derive(Args, Debug, Clone)]
pub struct VerifierArgs {
    /// Chain preset: ethereum, classic, mordor, test.
    #[arg(long, default_value = "ethereum", value_parser = chain_arg)]
    pub chain: ChainSpec,
    /// Block number (selects the epoch).
    #[arg(long, default_value_t = 0)]
    pub block: u64,
    /// Backend: auto (GPU if any, else CPU), opencl, cpu, cpu-light.
    #[arg(long, value_enum, default_value_t = VerifierKind::Auto)]
    pub verifier: VerifierKind,
    /// OpenCL device index as `dagproxy devices` lists it (default: first GPU, else first).
    #[arg(long)]
    pub opencl_device: Option<usize>,
    /// DAG directory for the cpu backend (default: generate in memory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Largest device buffer for a DAG in bytes (forces the split-buffer path).
    #[arg(long)]
    pub dag_split_bytes: Option<u64>,
    /// Custom cache size in bytes for every epoch (with --dataset-bytes; small test epochs).
    #[arg(long, requires = "dataset_bytes")]
    pub cache_bytes: Option<u64>,
    /// Custom dataset size in bytes for every epoch (with --cache-bytes).
    #[arg(long, requires = "cache_bytes")]
    pub dataset_bytes: Option<u64>,
}

impl VerifierArgs {
    fn config(&self) -> VerifierConfig {
        VerifierConfig {
            kind: self.verifier,
            opencl_device: self.opencl_device,
            data_dir: self.data_dir.clone(),
            dag_split_bytes: self.dag_split_bytes,
            sizes: self.cache_bytes.zip(self.dataset_bytes),
            ..VerifierConfig::default()
        }
    }
}

/// `dagproxy verify`: JSON lines `{"header_hash","nonce"}` in, `{"mix_digest","result"}` out.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub verifier: VerifierArgs,
}

/// `dagproxy devices`.
#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `dagproxy bench verify`.
#[derive(Args, Debug)]
pub struct BenchVerifyArgs {
    #[command(flatten)]
    pub verifier: VerifierArgs,
    /// Seconds measured per batch size.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Largest batch size tried (1, 64, 4096, 65536, 1M up to this).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_batch: usize,
    /// Print JSON (the only output format).
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Deserialize)]
struct Line {
    header_hash: String,
    nonce: String,
}

fn parse_line(line: &str) -> Result<PowInput, String> {
    let l: Line = serde_json::from_str(line).map_err(|e| format!("bad JSON line: {e}"))?;
    Ok(PowInput {
        header_hash: parse_h256(&l.header_hash, "header_hash").map_err(|e| e.to_string())?,
        nonce: parse_nonce(&l.nonce).map_err(|e| e.to_string())?,
    })
}

fn output_json(out: &PowOutput) -> serde_json::Value {
    serde_json::json!({"mix_digest": to_hex(&out.mix_digest), "result": to_hex(&out.result)})
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Lines gathered into one round of concurrent requests (the service batches them).
const LINES_PER_ROUND: usize = 4096;

/// Runs `dagproxy verify`. Blank lines are skipped; every other line gets one output line, in
/// order (`{"error": ...}` for a line that cannot be parsed or verified).
pub fn verify(args: VerifyArgs) -> Result<(), CliError> {
    let rt = runtime()?;
    rt.block_on(async move {
        let block = args.verifier.block;
        let mut config = args.verifier.config();
        config.queue = config.queue.max(LINES_PER_ROUND);
        let verifier = Verifier::start(args.verifier.chain.clone(), config).await?;
        tracing::info!(backend = %verifier.backend(), "verifying stdin");
        verifier.prepare(block);
        // A reader thread, so lines that arrive together are verified together and a lone
        // line is answered at once.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<String>>(LINES_PER_ROUND);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let stop = line.is_err();
                if tx.blocking_send(line).is_err() || stop {
                    break;
                }
            }
        });
        let mut stdout = std::io::stdout().lock();
        while let Some(first) = rx.recv().await {
            let mut lines = vec![first?];
            while lines.len() < LINES_PER_ROUND {
                match rx.try_recv() {
                    Ok(l) => lines.push(l?),
                    Err(_) => break,
                }
            }
            let futures = lines.iter().filter(|l| !l.trim().is_empty()).map(|l| {
                let parsed = parse_line(l);
                let v = verifier.clone();
                async move {
                    match parsed {
                        Ok(input) => match v.hash(block, input).await {
                            Ok(out) => output_json(&out),
                            Err(e) => serde_json::json!({"error": e.to_string()}),
                        },
                        Err(e) => serde_json::json!({"error": e}),
                    }
                }
            });
            for value in futures_util::future::join_all(futures).await {
                writeln!(stdout, "{value}")?;
            }
            stdout.flush()?;
        }
        verifier.shutdown().await;
        Ok(())
    })
}

/// Runs `dagproxy devices`.
pub fn devices(args: DevicesArgs) -> Result<(), CliError> {
    #[cfg(feature = "opencl")]
    let listed = super::opencl::devices().map_err(|e| e.to_string());
    #[cfg(not(feature = "opencl"))]
    let listed: Result<Vec<serde_json::Value>, String> =
        Err("built without the `opencl` feature".into());
    match (listed, args.json) {
        (Ok(list), true) => println!("{}", serde_json::json!({ "devices": list })),
        (Err(e), true) => println!("{}", serde_json::json!({ "devices": [], "error": e })),
        (Err(e), false) => println!("{e}"),
        #[cfg(feature = "opencl")]
        (Ok(list), false) => {
            if list.is_empty() {
                println!("no OpenCL device");
            }
            for d in list {
                println!(
                    "[{}] {} ({}) — {}: {} MiB global, {} MiB max allocation, {} compute units, {}",
                    d.index,
                    d.name,
                    d.kind,
                    d.platform,
                    d.global_mem >> 20,
                    d.max_alloc >> 20,
                    d.compute_units,
                    d.version
                );
            }
        }
        #[cfg(not(feature = "opencl"))]
        (Ok(_), false) => {}
    }
    Ok(())
}

/// One batch size in the `bench verify` report.
#[derive(Debug, Serialize)]
pub struct BatchFigures {
    /// Inputs per batch.
    pub batch: usize,
    /// Batches timed.
    pub batches: usize,
    /// Hashes per second over all timed batches.
    pub verifications_per_s: f64,
    /// Median batch latency in milliseconds.
    pub p50_ms: f64,
    /// 99th-percentile batch latency in milliseconds.
    pub p99_ms: f64,
}

/// The `bench verify --json` report.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Backend and device.
    pub backend: String,
    /// Chain measured.
    pub chain: String,
    /// Block measured.
    pub block: u64,
    /// Epoch measured.
    pub epoch: u64,
    /// Dataset size in bytes.
    pub dataset_size: u64,
    /// Seconds to build the light cache on the host.
    pub cache_seconds: f64,
    /// Seconds to generate the DAG (device or RAM); null for cpu-light.
    pub dag_seconds: Option<f64>,
    /// Per batch size.
    pub batches: Vec<BatchFigures>,
    /// Batch sizes not measured, and why.
    pub skipped: Vec<String>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[k.min(sorted.len() - 1)]
}

/// Runs `dagproxy bench verify`: drives the backend directly (no queue), one epoch.
pub fn bench(args: BenchVerifyArgs) -> Result<BenchReport, CliError> {
    let a = &args.verifier;
    let config = a.config();
    let mut backend: Box<dyn Backend> = super::open_backend(&a.chain, &config)?;
    let mut info: EpochInfo = a.chain.epoch_info(a.block);
    if let Some((c, d)) = config.sizes {
        info.cache_size = c;
        info.dataset_size = d;
    }
    let mut caches = Caches::default();
    let t = Instant::now();
    caches.get(&info);
    let cache_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    backend.prepare(&[info], &mut caches);
    while backend.step(&mut caches)? || backend.resident().iter().any(|r| r.mode == "building") {
        if backend.resident().iter().any(|r| r.mode == "building") {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let dag_seconds = backend
        .resident()
        .iter()
        .any(|r| r.mode == "full")
        .then(|| t.elapsed().as_secs_f64());
    let mut batches = Vec::new();
    let mut skipped = Vec::new();
    let mut rate: Option<f64> = None;
    for n in [1usize, 64, 4096, 65_536, 1 << 20] {
        if n > args.max_batch {
            skipped.push(format!("{n}: above --max-batch"));
            continue;
        }
        if let Some(r) = rate {
            let est = n as f64 / r;
            if est > 4.0 * args.seconds {
                skipped.push(format!(
                    "{n}: one batch would take about {est:.1} s at {r:.0}/s"
                ));
                continue;
            }
        }
        // Fresh inputs for every batch, so small batches do not hit warm caches.
        let jobs_for = |k: usize| -> Vec<(EpochInfo, PowInput)> {
            crate::bench::inputs(n, ((n as u64) << 32) + k as u64)
                .into_iter()
                .map(|i| (info, i))
                .collect()
        };
        // One warm-up batch (the first launch allocates batch buffers).
        backend.hash(&jobs_for(0), &mut caches)?;
        let mut lat = Vec::new();
        let mut spent = 0.0;
        while lat.is_empty() || spent < args.seconds {
            let jobs = jobs_for(lat.len() + 1);
            let t = Instant::now();
            backend.hash(&jobs, &mut caches)?;
            let dt = t.elapsed().as_secs_f64();
            lat.push(dt);
            spent += dt;
        }
        let total: f64 = lat.iter().sum();
        let r = (n * lat.len()) as f64 / total;
        rate = Some(r);
        lat.sort_by(f64::total_cmp);
        batches.push(BatchFigures {
            batch: n,
            batches: lat.len(),
            verifications_per_s: r,
            p50_ms: percentile(&lat, 0.5) * 1e3,
            p99_ms: percentile(&lat, 0.99) * 1e3,
        });
    }
    Ok(BenchReport {
        backend: backend.name(),
        chain: a.chain.to_string(),
        block: a.block,
        epoch: info.epoch,
        dataset_size: info.dataset_size,
        cache_seconds,
        dag_seconds,
        batches,
        skipped,
    })
}
