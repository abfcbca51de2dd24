//! The backends behind the verifier service: `cpu` (rayon over full datasets built in the
//! background, light cache meanwhile), `cpu-light`, and `opencl` (device-resident datasets,
//! light path on the device for epochs without a slot). All are driven by one worker thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use crate::ethash::{
    hashimoto_batch, hashimoto_par, ChainSpec, DagStore, EpochInfo, FullDataset, LightCache,
    PowInput, PowOutput,
};

use super::VerifyError;
use crate::ethash::progress::Progress;

/// Light caches by epoch, shared by whichever backend is active (so a fallback reuses them).
/// Caches for prepared epochs are built on their own threads, so the worker keeps answering.
#[derive(Debug, Default)]
pub(crate) struct Caches {
    map: HashMap<EpochInfo, Arc<OnceLock<Arc<LightCache>>>>,
    order: Vec<EpochInfo>,
    /// Epochs whose builder thread has been started.
    started: Vec<EpochInfo>,
}

/// Light caches kept (current, next, and a couple of stale epochs).
const KEEP_CACHES: usize = 4;

impl Caches {
    fn cell(&mut self, info: &EpochInfo) -> Arc<OnceLock<Arc<LightCache>>> {
        if let Some(c) = self.map.get(info) {
            return c.clone();
        }
        let cell = Arc::new(OnceLock::new());
        self.map.insert(*info, cell.clone());
        self.order.push(*info);
        while self.order.len() > KEEP_CACHES {
            let old = self.order.remove(0);
            self.map.remove(&old);
            self.started.retain(|i| *i != old);
        }
        cell
    }

    /// Starts building an epoch's cache on its own thread (about a second for real sizes).
    pub(crate) fn prefetch(&mut self, info: &EpochInfo) {
        let cell = self.cell(info);
        if cell.get().is_some() || self.started.contains(info) {
            return;
        }
        self.started.push(*info);
        let info = *info;
        let spawned = std::thread::Builder::new()
            .name(format!("cache-{}", info.epoch))
            .spawn(move || {
                cell.get_or_init(|| Arc::new(LightCache::new(info)));
            });
        if let Err(e) = spawned {
            // Not fatal: `get` builds it on the caller's thread.
            tracing::warn!(epoch = info.epoch, "cache thread: {e}");
        }
    }

    /// The cache of an epoch, waiting for (or doing) its construction.
    pub(crate) fn get(&mut self, info: &EpochInfo) -> Arc<LightCache> {
        let info = *info;
        self.cell(&info)
            .get_or_init(|| Arc::new(LightCache::new(info)))
            .clone()
    }

    /// The cache if it is built already.
    #[cfg_attr(not(feature = "opencl"), allow(dead_code))]
    pub(crate) fn try_get(&mut self, info: &EpochInfo) -> Option<Arc<LightCache>> {
        self.cell(info).get().cloned()
    }

    /// A handle that a builder thread can wait on.
    fn shared(&mut self, info: &EpochInfo) -> Arc<OnceLock<Arc<LightCache>>> {
        self.cell(info)
    }
}

/// What a backend holds for one epoch, for status and logs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Resident {
    /// Epoch number.
    pub epoch: u64,
    /// "full" (dataset ready), "building" (light path meanwhile) or "light".
    pub mode: &'static str,
    /// Share of the dataset generated, 0 to 1 (1 when full; 0 on the light path).
    pub progress: f64,
}

/// Dataset items generated so far, shared by a build thread and the backend.
#[derive(Debug, Default)]
struct BuildProgress {
    done: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

impl BuildProgress {
    fn fraction(&self) -> f64 {
        use std::sync::atomic::Ordering::Relaxed;
        let total = self.total.load(Relaxed);
        if total == 0 {
            0.0
        } else {
            self.done.load(Relaxed) as f64 / total as f64
        }
    }
}

/// One backend, driven by the service's worker thread.
pub(crate) trait Backend: Send {
    /// Name for logs and `Verifier::backend()`.
    fn name(&self) -> String;
    /// Keep these epochs (current first) resident, building what is missing in the background.
    fn prepare(&mut self, want: &[EpochInfo], caches: &mut Caches);
    /// One bounded piece of background work; true while more remains.
    fn step(&mut self, caches: &mut Caches) -> Result<bool, VerifyError>;
    /// Hashes a batch (any mix of epochs), outputs in input order.
    fn hash(
        &mut self,
        jobs: &[(EpochInfo, PowInput)],
        caches: &mut Caches,
    ) -> Result<Vec<PowOutput>, VerifyError>;
    /// What is resident.
    fn resident(&self) -> Vec<Resident>;
    /// Full datasets in RAM, ready to hash from any thread (the CPU backend's; the others
    /// hash on their own thread or device).
    fn ready_datasets(&self) -> Vec<(EpochInfo, Arc<FullDataset>)> {
        Vec::new()
    }
}

/// Groups job indices by epoch, keeping first-seen order.
fn by_epoch(jobs: &[(EpochInfo, PowInput)]) -> Vec<(EpochInfo, Vec<usize>)> {
    group_by(jobs.iter().map(|(info, _)| *info))
}

/// Groups indices by key, keeping first-seen order (a batch has one or two keys).
pub(super) fn group_by<K: PartialEq>(keys: impl Iterator<Item = K>) -> Vec<(K, Vec<usize>)> {
    let mut groups: Vec<(K, Vec<usize>)> = Vec::new();
    for (k, key) in keys.enumerate() {
        match groups.iter_mut().find(|(g, _)| *g == key) {
            Some((_, v)) => v.push(k),
            None => groups.push((key, vec![k])),
        }
    }
    groups
}

/// Puts each group's outputs back at its jobs' places.
pub(super) fn scatter(out: &mut [PowOutput], idx: &[usize], vals: &[PowOutput]) {
    for (&k, v) in idx.iter().zip(vals) {
        out[k] = *v;
    }
}

/// rayon over the light cache only.
#[derive(Debug, Default)]
pub(crate) struct CpuLight {
    want: Vec<EpochInfo>,
}

impl Backend for CpuLight {
    fn name(&self) -> String {
        "cpu-light".into()
    }

    fn prepare(&mut self, want: &[EpochInfo], caches: &mut Caches) {
        for info in want {
            caches.prefetch(info);
        }
        self.want = want.to_vec();
    }

    fn step(&mut self, _caches: &mut Caches) -> Result<bool, VerifyError> {
        Ok(false)
    }

    fn hash(
        &mut self,
        jobs: &[(EpochInfo, PowInput)],
        caches: &mut Caches,
    ) -> Result<Vec<PowOutput>, VerifyError> {
        let mut out = vec![PowOutput::default(); jobs.len()];
        for (info, idx) in by_epoch(jobs) {
            let cache = caches.get(&info);
            let inputs: Vec<PowInput> = idx.iter().map(|&k| jobs[k].1).collect();
            let mut vals = vec![PowOutput::default(); inputs.len()];
            hashimoto_par(&*cache, &inputs, &mut vals);
            scatter(&mut out, &idx, &vals);
        }
        Ok(out)
    }

    fn resident(&self) -> Vec<Resident> {
        self.want
            .iter()
            .map(|i| Resident {
                epoch: i.epoch,
                mode: "light",
                progress: 0.0,
            })
            .collect()
    }
}

/// Largest full-dataset batch hashed on the verifier thread itself (about 0.1-0.5 ms of work).
const INLINE_BATCH: usize = 128;

#[derive(Debug)]
enum DatasetState {
    Building(
        mpsc::Receiver<Result<Arc<FullDataset>, String>>,
        Arc<BuildProgress>,
    ),
    Ready(Arc<FullDataset>),
    Failed,
}

/// rayon over full datasets in RAM; the light cache answers while a dataset is being built.
#[derive(Debug)]
pub(crate) struct Cpu {
    chain: ChainSpec,
    data_dir: Option<PathBuf>,
    datasets: Vec<(EpochInfo, DatasetState)>,
}

impl Cpu {
    pub(crate) fn new(chain: ChainSpec, data_dir: Option<PathBuf>) -> Self {
        Self {
            chain,
            data_dir,
            datasets: Vec::new(),
        }
    }

    fn poll(&mut self) {
        for (info, state) in &mut self.datasets {
            if let DatasetState::Building(rx, _) = state {
                match rx.try_recv() {
                    Ok(Ok(ds)) => {
                        tracing::info!(epoch = info.epoch, "CPU dataset ready");
                        *state = DatasetState::Ready(ds);
                    }
                    Ok(Err(e)) => {
                        tracing::error!(epoch = info.epoch, "CPU dataset failed: {e}; light path");
                        *state = DatasetState::Failed;
                    }
                    Err(mpsc::TryRecvError::Empty) => {}
                    Err(mpsc::TryRecvError::Disconnected) => *state = DatasetState::Failed,
                }
            }
        }
    }

    fn ready(&self, info: &EpochInfo) -> Option<Arc<FullDataset>> {
        self.datasets.iter().find_map(|(i, s)| match s {
            DatasetState::Ready(ds) if i == info => Some(ds.clone()),
            _ => None,
        })
    }
}

impl Backend for Cpu {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn prepare(&mut self, want: &[EpochInfo], caches: &mut Caches) {
        self.datasets.retain(|(i, _)| want.contains(i));
        for info in want {
            if self.datasets.iter().any(|(i, _)| i == info) {
                continue;
            }
            let cell = caches.shared(info);
            let (tx, rx) = mpsc::channel();
            let chain = self.chain.clone();
            let dir = self.data_dir.clone();
            let epoch = info.epoch;
            let info = *info;
            let shared = Arc::new(BuildProgress::default());
            let progress = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("dag-{epoch}"))
                .spawn(move || {
                    tracing::info!(epoch, "building CPU dataset");
                    let cache = cell.get_or_init(|| Arc::new(LightCache::new(info)));
                    // Minutes for a real epoch: log lines (a service has no terminal) and
                    // the fraction for metrics.
                    let log = Progress::logging(&format!("dataset epoch {epoch}"));
                    let report = |done: u64, total: u64| {
                        use std::sync::atomic::Ordering::Relaxed;
                        progress.total.store(total, Relaxed);
                        progress.done.store(done, Relaxed);
                        log.update(done, total);
                    };
                    let ds = match dir {
                        Some(d) => DagStore::new(d)
                            .load_or_generate(&chain, cache, &report, &|e| {
                                tracing::warn!("{e}; regenerating")
                            })
                            .map_err(|e| e.to_string()),
                        None => Ok(FullDataset::generate(cache, &report)),
                    };
                    let _ = tx.send(ds.map(Arc::new));
                });
            let state = match spawned {
                Ok(_) => DatasetState::Building(rx, shared),
                Err(e) => {
                    tracing::error!(epoch, "cannot start dataset thread: {e}; light path");
                    DatasetState::Failed
                }
            };
            self.datasets.push((info, state));
        }
    }

    fn step(&mut self, _caches: &mut Caches) -> Result<bool, VerifyError> {
        // Datasets build on their own threads; polling here (and before each batch) is enough.
        self.poll();
        Ok(false)
    }

    fn hash(
        &mut self,
        jobs: &[(EpochInfo, PowInput)],
        caches: &mut Caches,
    ) -> Result<Vec<PowOutput>, VerifyError> {
        self.poll();
        let mut out = vec![PowOutput::default(); jobs.len()];
        for (info, idx) in by_epoch(jobs) {
            let inputs: Vec<PowInput> = idx.iter().map(|&k| jobs[k].1).collect();
            let mut vals = vec![PowOutput::default(); inputs.len()];
            match self.ready(&info) {
                // A small batch costs microseconds from RAM: handing it to the rayon pool
                // (waking threads, waiting) would cost more than hashing it here.
                Some(ds) if inputs.len() <= INLINE_BATCH => {
                    hashimoto_batch(&ds.rows(), &inputs, &mut vals)
                }
                Some(ds) => hashimoto_par(&ds.rows(), &inputs, &mut vals),
                None => hashimoto_par(&*caches.get(&info), &inputs, &mut vals),
            }
            scatter(&mut out, &idx, &vals);
        }
        Ok(out)
    }

    fn ready_datasets(&self) -> Vec<(EpochInfo, Arc<FullDataset>)> {
        self.datasets
            .iter()
            .filter_map(|(i, s)| match s {
                DatasetState::Ready(ds) => Some((*i, ds.clone())),
                _ => None,
            })
            .collect()
    }

    fn resident(&self) -> Vec<Resident> {
        self.datasets
            .iter()
            .map(|(i, s)| {
                let (mode, progress) = match s {
                    DatasetState::Ready(_) => ("full", 1.0),
                    DatasetState::Building(_, p) => ("building", p.fraction()),
                    DatasetState::Failed => ("light", 0.0),
                };
                Resident {
                    epoch: i.epoch,
                    mode,
                    progress,
                }
            })
            .collect()
    }
}

#[cfg(feature = "opencl")]
pub(crate) use self::cl::Opencl;

#[cfg(feature = "opencl")]
mod cl {
    use super::*;
    use crate::verify::opencl::{ClEngine, ClError, SLOTS};

    /// Items generated per background step: bounded so batches keep flowing while a DAG builds.
    const STEP_ITEMS: u64 = 1 << 18;

    fn backend_err(e: ClError) -> VerifyError {
        VerifyError::Backend(e.to_string())
    }

    /// The OpenCL backend: up to two resident datasets, light path on the device otherwise.
    #[derive(Debug)]
    pub(crate) struct Opencl {
        engine: ClEngine,
        split_bytes: Option<u64>,
        mem_limit: Option<u64>,
        /// Epochs wanted but given no slot (card too small): served by the light kernel.
        light_only: Vec<EpochInfo>,
        /// Epochs given a slot whose generation has not started (cache still building).
        queued: Vec<EpochInfo>,
        /// Epochs whose device DAG failed (allocation, generation): light path, not retried.
        failed: Vec<EpochInfo>,
        logged_small: bool,
    }

    impl Opencl {
        pub(crate) fn open(
            device: Option<usize>,
            split_bytes: Option<u64>,
            mem_limit: Option<u64>,
        ) -> Result<Self, ClError> {
            let engine = ClEngine::open(device)?;
            Ok(Self {
                engine,
                split_bytes,
                mem_limit,
                light_only: Vec::new(),
                queued: Vec::new(),
                failed: Vec::new(),
                logged_small: false,
            })
        }

        fn slot_of(&self, info: &EpochInfo) -> Option<(usize, bool)> {
            (0..SLOTS).find_map(|s| match self.engine.slot_state(s) {
                Some((i, done)) if i == *info => Some((s, done)),
                _ => None,
            })
        }
    }

    impl Backend for Opencl {
        fn name(&self) -> String {
            let d = self.engine.device();
            format!("opencl ({}, {})", d.name, d.platform)
        }

        fn prepare(&mut self, want: &[EpochInfo], caches: &mut Caches) {
            let Some(current) = want.first() else { return };
            let fit = (0..=want.len().min(SLOTS))
                .rev()
                .find(|&n| self.engine.fits_slots(current, n as u64, self.mem_limit))
                .unwrap_or(0);
            if fit < want.len() && !self.logged_small {
                let d = self.engine.device();
                tracing::warn!(
                    "OpenCL device {} has {} bytes of memory: room for {fit} of {} DAGs of {} bytes; epochs without a DAG use the light-cache path",
                    d.name,
                    self.mem_limit.unwrap_or(d.global_mem),
                    want.len(),
                    current.dataset_size
                );
                self.logged_small = true;
            }
            self.failed.retain(|i| want.contains(i));
            let mut slotted = Vec::new();
            self.light_only.clear();
            for (k, info) in want.iter().enumerate() {
                if k < fit && !self.failed.contains(info) {
                    slotted.push(*info);
                } else {
                    self.light_only.push(*info);
                }
            }
            // Free slots holding epochs no longer wanted in a slot.
            for s in 0..SLOTS {
                if let Some((i, _)) = self.engine.slot_state(s) {
                    if !slotted.contains(&i) {
                        self.engine.free_slot(s);
                    }
                }
            }
            // Slots start in `step` once the epoch's cache is built (off this thread).
            self.queued = slotted
                .iter()
                .filter(|i| self.slot_of(i).is_none())
                .copied()
                .collect();
            for info in &self.queued {
                caches.prefetch(info);
            }
        }

        fn step(&mut self, caches: &mut Caches) -> Result<bool, VerifyError> {
            let mut waiting = false;
            for info in std::mem::take(&mut self.queued) {
                let free = (0..SLOTS).find(|&s| self.engine.slot_state(s).is_none());
                let (Some(free), Some(cache)) = (free, caches.try_get(&info)) else {
                    waiting = true;
                    self.queued.push(info);
                    continue;
                };
                tracing::info!(
                    epoch = info.epoch,
                    slot = free,
                    bytes = info.dataset_size,
                    "generating DAG on the device"
                );
                if let Err(e) = self.engine.begin_slot(free, &cache, self.split_bytes) {
                    tracing::error!(epoch = info.epoch, "device DAG: {e}; light path");
                    self.engine.free_slot(free);
                    self.light_only.push(info);
                    self.failed.push(info);
                }
            }
            for s in 0..SLOTS {
                if let Some((info, false)) = self.engine.slot_state(s) {
                    let done = match self.engine.generate_step(s, STEP_ITEMS) {
                        Ok(done) => done,
                        Err(e) => {
                            // Not fatal for shares: this epoch stays on the light path.
                            tracing::error!(epoch = info.epoch, "device DAG: {e}; light path");
                            self.engine.free_slot(s);
                            self.light_only.push(info);
                            self.failed.push(info);
                            true
                        }
                    };
                    if done {
                        tracing::info!(epoch = info.epoch, slot = s, "device DAG ready");
                    }
                    return Ok(true);
                }
            }
            Ok(waiting)
        }

        fn hash(
            &mut self,
            jobs: &[(EpochInfo, PowInput)],
            caches: &mut Caches,
        ) -> Result<Vec<PowOutput>, VerifyError> {
            let mut out = vec![PowOutput::default(); jobs.len()];
            let mut full = Vec::new();
            let mut full_idx = Vec::new();
            let mut light: Vec<(EpochInfo, Vec<usize>)> = Vec::new();
            for (info, idx) in by_epoch(jobs) {
                match self.slot_of(&info) {
                    Some((s, true)) => {
                        for k in idx {
                            full.push((s, jobs[k].1));
                            full_idx.push(k);
                        }
                    }
                    _ => light.push((info, idx)),
                }
            }
            if !full.is_empty() {
                let vals = self.engine.hash_full(&full).map_err(backend_err)?;
                scatter(&mut out, &full_idx, &vals);
            }
            for (info, idx) in light {
                if !self.engine.has_light(&info) {
                    let cache = caches.get(&info);
                    self.engine
                        .ensure_light(&cache, KEEP_CACHES)
                        .map_err(backend_err)?;
                }
                let inputs: Vec<PowInput> = idx.iter().map(|&k| jobs[k].1).collect();
                let vals = self
                    .engine
                    .hash_light(&info, &inputs)
                    .map_err(backend_err)?;
                scatter(&mut out, &idx, &vals);
            }
            Ok(out)
        }

        fn resident(&self) -> Vec<Resident> {
            let mut r: Vec<Resident> = (0..SLOTS)
                .filter_map(|s| self.engine.slot_progress(s))
                .map(|(i, progress)| Resident {
                    epoch: i.epoch,
                    mode: if progress >= 1.0 { "full" } else { "building" },
                    progress,
                })
                .collect();
            r.extend(self.queued.iter().map(|i| Resident {
                epoch: i.epoch,
                mode: "building",
                progress: 0.0,
            }));
            r.extend(self.light_only.iter().map(|i| Resident {
                epoch: i.epoch,
                mode: "light",
                progress: 0.0,
            }));
            r
        }
    }
}
