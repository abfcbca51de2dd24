//! The verifier service the share pipeline calls: `check(share) -> ShareCheck`. Shares are
//! queued (bounded: [`VerifyError::Busy`] when full), gathered into micro-batches (flush at
//! `max_batch` or `max_wait`) by one worker thread that owns the backend (OpenCL kernels are not
//! `Sync`), hashed in one go, and answered one by one. Shares of an epoch whose full dataset is
//! ready in RAM skip that thread: a task on the runtime batches them (see [`batch_on_runtime`]).
//!
//! Backends: `opencl` (device-resident DAGs), `cpu` (rayon over DAGs in RAM, light cache while
//! they build), `cpu-light`; `auto` takes a GPU if any and otherwise the CPU, and falls back to
//! the CPU without losing the batch in flight if the device fails.

pub(crate) mod backend;
pub mod cli;
#[cfg(feature = "opencl")]
pub mod opencl;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::ethash::chain::{HASH_BYTES, MIX_BYTES};
use crate::ethash::{
    check_share, hashimoto_batch, ChainSpec, EpochInfo, FullDataset, PowInput, PowOutput,
    ShareCheck, U256,
};

pub use self::backend::Resident;
use self::backend::{group_by, scatter, Backend, Caches, Cpu, CpuLight};
use crate::observe::Histogram;

/// Batch-size buckets (shares): powers of two up to the largest default batch.
const BATCH_SIZES: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
/// Batch hashing-time buckets, in microseconds.
const BATCH_MICROS: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// Which backend verifies shares (`--verifier`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifierKind {
    /// A GPU if there is one, else the CPU (one log line says why).
    #[default]
    Auto,
    /// OpenCL only.
    Opencl,
    /// rayon over the full DAG in RAM (light cache while it is being built).
    Cpu,
    /// rayon over the light cache only.
    CpuLight,
}

/// Settings of the verifier service.
#[derive(Clone, Debug)]
pub struct VerifierConfig {
    /// Backend choice.
    pub kind: VerifierKind,
    /// Flush a batch at this many shares.
    pub max_batch: usize,
    /// Flush a batch after this long.
    pub max_wait: Duration,
    /// Shares waiting at most; beyond it `check` answers [`VerifyError::Busy`].
    pub queue: usize,
    /// OpenCL device index (`--opencl-device`), over all platforms as `dagproxy devices` lists.
    pub opencl_device: Option<usize>,
    /// DAG directory for the CPU backend (None: generate in memory only).
    pub data_dir: Option<std::path::PathBuf>,
    /// Largest single device buffer for a DAG (None: the device's max allocation). Smaller
    /// values force the split-buffer path (tests).
    pub dag_split_bytes: Option<u64>,
    /// Device memory to plan with (None: the device's global memory). Lower it to see the
    /// small-card path (one resident DAG, light path for the other epoch).
    pub device_memory: Option<u64>,
    /// Override `(cache_size, dataset_size)` of every epoch (tests and benchmarks with small
    /// custom epochs; multiples of 64 and 128).
    pub sizes: Option<(u64, u64)>,
    /// Testing hook: the OpenCL backend reports a device failure on this batch (0-based), to
    /// exercise the fallback with shares in flight. Never set in production.
    #[doc(hidden)]
    pub inject_device_failure_at_batch: Option<u64>,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            kind: VerifierKind::Auto,
            max_batch: 4096,
            max_wait: Duration::from_micros(500),
            queue: 65_536,
            opencl_device: None,
            data_dir: None,
            dag_split_bytes: None,
            device_memory: None,
            sizes: None,
            inject_device_failure_at_batch: None,
        }
    }
}

/// Errors of the verifier service.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The queue is full: answer the miner "busy", do not buffer without bound.
    #[error("verifier busy")]
    Busy,
    /// The service has stopped.
    #[error("verifier stopped")]
    Stopped,
    /// The backend failed.
    #[error("verifier backend: {0}")]
    Backend(String),
    /// The configuration cannot work.
    #[error("verifier config: {0}")]
    Config(String),
}

type Reply = oneshot::Sender<Result<PowOutput, VerifyError>>;

/// Largest batch hashed in one go on the runtime: about 0.3 ms of work from RAM, so a runtime
/// thread is never held long.
const RUNTIME_BATCH: usize = 256;

/// Full datasets ready in RAM, by `(epoch length, epoch)`.
type ReadySets = Vec<((u64, u64), Arc<FullDataset>)>;

/// What the runtime batcher receives.
enum Fast {
    Job {
        dataset: Arc<FullDataset>,
        input: PowInput,
        reply: Reply,
    },
    /// Answered once every job sent before it is answered (shutdown).
    Barrier(oneshot::Sender<()>),
}

enum Msg {
    Job {
        block: u64,
        input: PowInput,
        reply: Reply,
    },
    Prepare(u64),
    Shutdown(oneshot::Sender<()>),
}

/// State shared by handles and the worker.
#[derive(Debug)]
struct Shared {
    chain: ChainSpec,
    pending: AtomicUsize,
    running: AtomicBool,
    backend: Mutex<String>,
    resident: Mutex<Vec<Resident>>,
    /// Published by the worker when a CPU dataset becomes ready or is dropped.
    ready: RwLock<ReadySets>,
    /// Shares hashed by the runtime batcher.
    runtime_shares: AtomicU64,
    batch_sizes: Histogram,
    batch_micros: Histogram,
}

impl Shared {
    /// The ready dataset of `block`'s epoch, if any.
    fn ready_for(&self, block: u64) -> Option<Arc<FullDataset>> {
        let len = self.chain.epoch_length_at(block);
        let key = (len, block / len);
        let ready = self.ready.read().ok()?;
        ready
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, d)| d.clone())
    }

    /// Books a hashed batch: metrics, then the queue places (freed before answering, so an
    /// answered caller sees room).
    fn hashed(&self, shares: usize, started: Instant) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.batch_micros.observe(micros);
        self.batch_sizes.observe(shares as u64);
        self.pending.fetch_sub(shares, Ordering::SeqCst);
    }
}

/// Handle to the verifier service; cheap to clone.
#[derive(Clone, Debug)]
pub struct Verifier {
    tx: mpsc::Sender<Msg>,
    fast: tokio::sync::mpsc::UnboundedSender<Fast>,
    shared: Arc<Shared>,
    queue: usize,
}

impl std::fmt::Debug for Fast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fast::Job { .. } => f.write_str("Job"),
            Fast::Barrier(_) => f.write_str("Barrier"),
        }
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Job { block, .. } => write!(f, "Job(block {block})"),
            Msg::Prepare(b) => write!(f, "Prepare({b})"),
            Msg::Shutdown(_) => f.write_str("Shutdown"),
        }
    }
}

/// Picks and opens the backend.
fn open_backend(
    chain: &ChainSpec,
    config: &VerifierConfig,
) -> Result<Box<dyn Backend>, VerifyError> {
    match config.kind {
        VerifierKind::Cpu => Ok(Box::new(Cpu::new(chain.clone(), config.data_dir.clone()))),
        VerifierKind::CpuLight => Ok(Box::new(CpuLight::default())),
        VerifierKind::Opencl => open_opencl(config).map_err(VerifyError::Backend),
        VerifierKind::Auto => match open_opencl(config) {
            Ok(b) => {
                tracing::info!("verifier: {}", b.name());
                Ok(b)
            }
            Err(why) => {
                tracing::warn!("verifier: no usable OpenCL device ({why}); verifying on the CPU");
                Ok(Box::new(Cpu::new(chain.clone(), config.data_dir.clone())))
            }
        },
    }
}

#[cfg(feature = "opencl")]
fn open_opencl(config: &VerifierConfig) -> Result<Box<dyn Backend>, String> {
    let b = backend::Opencl::open(
        config.opencl_device,
        config.dag_split_bytes,
        config.device_memory,
    )
    .map_err(|e| e.to_string())?;
    Ok(Box::new(b))
}

#[cfg(not(feature = "opencl"))]
fn open_opencl(_config: &VerifierConfig) -> Result<Box<dyn Backend>, String> {
    Err("built without the `opencl` feature".into())
}

impl Verifier {
    /// Starts the service for a chain: opens the backend (an error for `opencl` without a
    /// device; `auto` falls back to the CPU) on a worker thread.
    pub async fn start(chain: ChainSpec, config: VerifierConfig) -> Result<Self, VerifyError> {
        if config.max_batch == 0 || config.queue == 0 {
            return Err(VerifyError::Config(
                "max_batch and queue must be at least 1".into(),
            ));
        }
        if let Some((c, d)) = config.sizes {
            if c == 0 || d == 0 || c % HASH_BYTES != 0 || d % MIX_BYTES != 0 {
                return Err(VerifyError::Config(format!(
                    "sizes ({c}, {d}): cache a multiple of 64, dataset of 128"
                )));
            }
        }
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            chain: chain.clone(),
            pending: AtomicUsize::new(0),
            running: AtomicBool::new(false),
            backend: Mutex::new(String::new()),
            resident: Mutex::new(Vec::new()),
            ready: RwLock::new(Vec::new()),
            runtime_shares: AtomicU64::new(0),
            batch_sizes: Histogram::new(BATCH_SIZES, 1.0),
            batch_micros: Histogram::new(BATCH_MICROS, 1e-6),
        });
        let (ready_tx, ready_rx) = oneshot::channel();
        let worker_shared = shared.clone();
        let queue = config.queue;
        std::thread::Builder::new()
            .name("verifier".into())
            .spawn(move || {
                let backend = match open_backend(&chain, &config) {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                if let Ok(mut name) = worker_shared.backend.lock() {
                    *name = backend.name();
                }
                worker_shared.running.store(true, Ordering::SeqCst);
                let _ = ready_tx.send(Ok(()));
                Worker {
                    chain,
                    config,
                    backend,
                    caches: Caches::default(),
                    infos: HashMap::new(),
                    prepared: None,
                    shared: worker_shared,
                    batches: 0,
                }
                .run(rx);
            })
            .map_err(|e| VerifyError::Backend(format!("worker thread: {e}")))?;
        ready_rx.await.map_err(|_| VerifyError::Stopped)??;
        let (fast, fast_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch_on_runtime(fast_rx, shared.clone()));
        Ok(Self {
            tx,
            fast,
            shared,
            queue,
        })
    }

    /// The backend in use, for logs and metrics (changes if `auto` fell back to the CPU).
    pub fn backend(&self) -> String {
        self.shared
            .backend
            .lock()
            .map(|n| n.clone())
            .unwrap_or_default()
    }

    /// Whether shares can be verified now (the service runs; epochs without a ready DAG are
    /// verified on the light path).
    pub fn ready(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Epochs the backend holds and how (full, building, light).
    pub fn resident(&self) -> Vec<Resident> {
        self.shared
            .resident
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Shares per hashed batch, since start.
    pub fn batch_sizes(&self) -> &Histogram {
        &self.shared.batch_sizes
    }

    /// Hashing time per batch (backend only, queue wait excluded), exported in seconds.
    pub fn batch_seconds(&self) -> &Histogram {
        &self.shared.batch_micros
    }

    /// Shares hashed on the async runtime from a dataset in RAM, since start (the others went
    /// to the worker thread: light path, OpenCL, or before the dataset was ready).
    pub fn runtime_shares(&self) -> u64 {
        self.shared.runtime_shares.load(Ordering::Relaxed)
    }

    /// Shares queued or being hashed.
    pub fn pending(&self) -> usize {
        self.shared.pending.load(Ordering::SeqCst)
    }

    /// Tells the service that templates are at `block`, so it makes that epoch and the next
    /// resident before shares arrive (the next DAG is built ahead of the boundary).
    pub fn prepare(&self, block: u64) {
        let _ = self.tx.send(Msg::Prepare(block));
    }

    /// Hashimoto of one input at `block`'s epoch, batched with other shares.
    pub async fn hash(&self, block: u64, input: PowInput) -> Result<PowOutput, VerifyError> {
        if !self.ready() {
            return Err(VerifyError::Stopped);
        }
        // Reserve a queue place first, so the bound holds under concurrency.
        let before = self.shared.pending.fetch_add(1, Ordering::SeqCst);
        if before >= self.queue {
            self.shared.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(VerifyError::Busy);
        }
        let (reply, rx) = oneshot::channel();
        // A ready dataset in RAM: batch on the runtime, sparing the hop to the worker thread
        // and its wake-ups (on a busy machine each one waits for a CPU).
        let sent = match self.shared.ready_for(block) {
            Some(dataset) => self
                .fast
                .send(Fast::Job {
                    dataset,
                    input,
                    reply,
                })
                .is_ok(),
            None => self
                .tx
                .send(Msg::Job {
                    block,
                    input,
                    reply,
                })
                .is_ok(),
        };
        if !sent {
            self.shared.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(VerifyError::Stopped);
        }
        rx.await.map_err(|_| VerifyError::Stopped)?
    }

    /// Checks a share: one hashimoto, then mix and both targets.
    pub async fn check(
        &self,
        block: u64,
        input: PowInput,
        mix: [u8; 32],
        share_target: U256,
        block_target: U256,
    ) -> Result<ShareCheck, VerifyError> {
        let out = self.hash(block, input).await?;
        Ok(check_share(&out, &mix, share_target, block_target))
    }

    /// Stops taking shares and finishes those in flight; later calls answer `Stopped`.
    pub async fn shutdown(&self) {
        self.shared.running.store(false, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        if self.fast.send(Fast::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct Job {
    info: EpochInfo,
    input: PowInput,
    reply: Reply,
}

/// The thread that owns the backend.
struct Worker {
    chain: ChainSpec,
    config: VerifierConfig,
    backend: Box<dyn Backend>,
    caches: Caches,
    infos: HashMap<(u64, u64), EpochInfo>,
    prepared: Option<u64>,
    shared: Arc<Shared>,
    batches: u64,
}

impl Worker {
    fn info(&mut self, block: u64) -> EpochInfo {
        let len = self.chain.epoch_length_at(block);
        let key = (len, block / len);
        if let Some(i) = self.infos.get(&key) {
            return *i;
        }
        let mut info = self.chain.epoch_info(block);
        if let Some((c, d)) = self.config.sizes {
            info.cache_size = c;
            info.dataset_size = d;
        }
        if self.infos.len() > 64 {
            self.infos.clear();
        }
        self.infos.insert(key, info);
        info
    }

    fn prepare(&mut self, block: u64) {
        self.prepared = Some(block);
        let current = self.info(block);
        let len = self.chain.epoch_length_at(block);
        let next_start = (block / len + 1) * len;
        let next = self.info(next_start);
        let want = [current, next];
        for info in &want {
            self.caches.prefetch(info);
        }
        self.backend.prepare(&want, &mut self.caches);
        self.publish();
    }

    fn publish(&self) {
        // Ready sets first: whoever sees an epoch "full" also finds its dataset.
        self.publish_ready();
        if let Ok(mut r) = self.shared.resident.lock() {
            *r = self.backend.resident();
        }
    }

    /// Hands the backend's ready datasets to the runtime batcher (only when they change).
    fn publish_ready(&self) {
        let sets: ReadySets = self
            .backend
            .ready_datasets()
            .into_iter()
            .filter_map(|(info, ds)| {
                let key = self.infos.iter().find(|(_, i)| **i == info)?.0;
                Some((*key, ds))
            })
            .collect();
        let same = |old: &ReadySets| {
            old.len() == sets.len()
                && old
                    .iter()
                    .zip(&sets)
                    .all(|(a, b)| a.0 == b.0 && Arc::ptr_eq(&a.1, &b.1))
        };
        if self.shared.ready.read().is_ok_and(|r| same(&r)) {
            return;
        }
        if let Ok(mut r) = self.shared.ready.write() {
            *r = sets;
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut background = false;
        let mut stop: Option<oneshot::Sender<()>> = None;
        while stop.is_none() {
            // Idle: block for work, or advance background DAG generation between batches.
            let idle = if background {
                Duration::from_micros(200)
            } else {
                Duration::from_millis(200)
            };
            let first = match rx.recv_timeout(idle) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    background = self.step();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            let mut deadline = None;
            let mut next = Some(first);
            // Jobs arriving during the wait are collected after one sleep, not one wake-up
            // each: a wake per share cost as many context switches as shares under load.
            let mut slept = false;
            loop {
                match next.take() {
                    Some(Msg::Job {
                        block,
                        input,
                        reply,
                    }) => {
                        if self.prepared.is_none() {
                            self.prepare(block);
                            background = true;
                        }
                        let info = self.info(block);
                        batch.push(Job { info, input, reply });
                        deadline.get_or_insert_with(|| Instant::now() + self.config.max_wait);
                    }
                    Some(Msg::Prepare(block)) => {
                        self.prepare(block);
                        background = true;
                    }
                    Some(Msg::Shutdown(done)) => {
                        stop = Some(done);
                        // Take every job already queued, then finish.
                        while let Ok(m) = rx.try_recv() {
                            if let Msg::Job {
                                block,
                                input,
                                reply,
                            } = m
                            {
                                let info = self.info(block);
                                batch.push(Job { info, input, reply });
                            }
                        }
                        break;
                    }
                    None => {}
                }
                if batch.len() >= self.config.max_batch {
                    break;
                }
                let Some(d) = deadline else {
                    // Only control messages so far: back to idle.
                    break;
                };
                match rx.try_recv() {
                    Ok(m) => next = Some(m),
                    Err(mpsc::TryRecvError::Empty) => {
                        let now = Instant::now();
                        if slept || now >= d {
                            break;
                        }
                        std::thread::sleep(d - now);
                        slept = true;
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            }
            // Shutdown drains can exceed max_batch; keep launches to the configured size.
            while !batch.is_empty() {
                let rest = batch.split_off(batch.len().min(self.config.max_batch));
                self.process(batch);
                batch = rest;
            }
            // A dataset may have become ready while hashing (the CPU backend polls then).
            self.publish_ready();
            // Under steady load the queue never idles: interleave DAG generation with batches.
            if background {
                background = self.step();
            }
        }
        self.shared.running.store(false, Ordering::SeqCst);
        if let Some(done) = stop {
            let _ = done.send(());
        }
    }

    fn step(&mut self) -> bool {
        match self.backend.step(&mut self.caches) {
            Ok(more) => {
                self.publish();
                more
            }
            Err(e) => {
                self.fail(&e);
                false
            }
        }
    }

    /// A device failure: `auto` moves to the CPU; an explicit backend keeps answering errors.
    fn fail(&mut self, e: &VerifyError) -> bool {
        if self.config.kind != VerifierKind::Auto || !self.backend.name().starts_with("opencl") {
            tracing::error!("verifier backend {}: {e}", self.backend.name());
            return false;
        }
        tracing::error!(
            "verifier backend {} failed: {e}; falling back to the CPU",
            self.backend.name()
        );
        self.backend = Box::new(Cpu::new(self.chain.clone(), self.config.data_dir.clone()));
        if let Ok(mut name) = self.shared.backend.lock() {
            *name = self.backend.name();
        }
        if let Some(b) = self.prepared {
            self.prepare(b);
        }
        true
    }

    fn process(&mut self, batch: Vec<Job>) {
        let jobs: Vec<(EpochInfo, PowInput)> = batch.iter().map(|j| (j.info, j.input)).collect();
        let inject = self.config.inject_device_failure_at_batch == Some(self.batches)
            && self.backend.name().starts_with("opencl");
        self.batches += 1;
        let started = Instant::now();
        let mut result = if inject {
            Err(VerifyError::Backend("injected device failure".into()))
        } else {
            self.backend.hash(&jobs, &mut self.caches)
        };
        if let Err(e) = &result {
            // The batch is still here: redo it on the fallback, losing no share.
            if self.fail(e) {
                result = self.backend.hash(&jobs, &mut self.caches);
            }
        }
        self.shared.hashed(batch.len(), started);
        match result {
            Ok(outs) => {
                for (job, out) in batch.into_iter().zip(outs) {
                    let _ = job.reply.send(Ok(out));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Hashes shares of epochs with a ready dataset in RAM, on the runtime. Shares that arrive
/// while a batch is hashed make up the next one, so under load batches grow by themselves and
/// at low load a share waits for no timer. A batch is at most [`RUNTIME_BATCH`] shares.
async fn batch_on_runtime(mut rx: tokio::sync::mpsc::UnboundedReceiver<Fast>, shared: Arc<Shared>) {
    let mut msgs = Vec::with_capacity(RUNTIME_BATCH);
    let mut inputs = Vec::with_capacity(RUNTIME_BATCH);
    let mut outs = Vec::with_capacity(RUNTIME_BATCH);
    loop {
        if rx.recv_many(&mut msgs, RUNTIME_BATCH).await == 0 {
            return;
        }
        // One turn of the scheduler lets tasks already woken add their shares to this batch.
        if msgs.len() < RUNTIME_BATCH {
            tokio::task::yield_now().await;
            while msgs.len() < RUNTIME_BATCH {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
        }
        let started = Instant::now();
        let mut jobs = Vec::with_capacity(msgs.len());
        let mut barriers = Vec::new();
        for m in msgs.drain(..) {
            match m {
                Fast::Job {
                    dataset,
                    input,
                    reply,
                } => jobs.push((dataset, input, reply)),
                // Everything sent before a barrier is in this batch: answered before it.
                Fast::Barrier(done) => barriers.push(done),
            }
        }
        // Almost always one epoch: hash per dataset, in order within each.
        let mut answers = vec![PowOutput::default(); jobs.len()];
        for (_, idx) in group_by(jobs.iter().map(|(ds, _, _)| Arc::as_ptr(ds))) {
            let ds = &jobs[idx[0]].0;
            inputs.clear();
            inputs.extend(idx.iter().map(|&k| jobs[k].1));
            outs.clear();
            outs.resize(inputs.len(), PowOutput::default());
            hashimoto_batch(&ds.rows(), &inputs, &mut outs);
            scatter(&mut answers, &idx, &outs);
        }
        if !jobs.is_empty() {
            shared.hashed(jobs.len(), started);
            shared
                .runtime_shares
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        }
        for ((_, _, reply), out) in jobs.into_iter().zip(answers) {
            let _ = reply.send(Ok(out));
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
}
