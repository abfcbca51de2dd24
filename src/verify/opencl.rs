//! The OpenCL side: platform/device discovery that never panics, the ethash program
//! (`kernels/ethash.cl`, embedded), dataset slots generated on the device (split over buffers
//! when larger than the device's single-allocation limit) and batch hashimoto.
//!
//! [`ClEngine`] owns `ocl::Kernel`s, which are `Send` but not `Sync`: one thread owns it.

use ocl::enums::{DeviceInfo, DeviceInfoResult};
use ocl::flags::{DeviceType, MemFlags};
use ocl::{Buffer, Context, Device, Kernel, Platform, Program, Queue};

use crate::ethash::chain::MIX_BYTES;
use crate::ethash::{EpochInfo, LightCache, PowInput, PowOutput};

/// The kernel source, built into the binary.
pub const KERNEL_SOURCE: &str = include_str!("../../kernels/ethash.cl");

/// Dataset buffers per slot the kernel takes.
pub const MAX_SPLIT_BUFFERS: usize = 4;
/// Resident dataset slots (current and next epoch).
pub const SLOTS: usize = 2;
/// Work-group size asked for (capped by the device).
const WORK_GROUP: usize = 128;

/// Errors of the OpenCL backend.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ClError {
    /// No OpenCL platform (no ICD driver installed), found without the loader's 10 s retry.
    #[error("no OpenCL platform: {0}")]
    NoPlatform(String),
    /// No usable device (or the index asked for does not exist).
    #[error("no OpenCL device: {0}")]
    NoDevice(String),
    /// The kernel did not compile.
    #[error("OpenCL kernel build failed: {0}")]
    Build(String),
    /// Device memory exhausted.
    #[error("OpenCL out of memory: {0}")]
    OutOfMemory(String),
    /// Any other device failure (device lost, bad argument, ...).
    #[error("OpenCL device error: {0}")]
    Device(String),
}

fn cl_err(what: &str, e: ocl::Error) -> ClError {
    let status = e.api_status().map(|s| format!("{s:?}")).unwrap_or_default();
    let text = format!("{what}: {e}");
    if status.contains("ALLOCATION_FAILURE") || status.contains("OUT_OF_") {
        ClError::OutOfMemory(text)
    } else {
        ClError::Device(text)
    }
}

/// One OpenCL device as `dagproxy devices` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClDeviceInfo {
    /// Index for `--opencl-device` (over all platforms, in listing order).
    pub index: usize,
    /// Platform name.
    pub platform: String,
    /// Device name.
    pub name: String,
    /// Device vendor.
    pub vendor: String,
    /// "gpu", "cpu", "accelerator" or "other".
    pub kind: String,
    /// Global memory in bytes.
    pub global_mem: u64,
    /// Largest single allocation in bytes.
    pub max_alloc: u64,
    /// Compute units.
    pub compute_units: u32,
    /// OpenCL version string.
    pub version: String,
}

/// Counts OpenCL platforms with one direct `clGetPlatformIDs` call: answers at once when the
/// loader has no driver (ocl's own lookup retries for 10 s and `Platform::list` panics).
pub fn platform_count() -> Result<u32, ClError> {
    let mut n: ocl::core::ffi::cl_uint = 0;
    // SAFETY: the documented query form (num_entries 0, null list) only writes `n`, a valid
    // local.
    #[allow(unsafe_code)]
    let status = unsafe { ocl::core::ffi::clGetPlatformIDs(0, std::ptr::null_mut(), &mut n) };
    match status {
        0 if n > 0 => Ok(n),
        0 => Err(ClError::NoPlatform(
            "the OpenCL loader lists no platform".into(),
        )),
        -1001 => Err(ClError::NoPlatform(
            "no OpenCL driver (ICD) installed (CL_PLATFORM_NOT_FOUND_KHR)".into(),
        )),
        s => Err(ClError::NoPlatform(format!(
            "clGetPlatformIDs returned {s}"
        ))),
    }
}

fn platforms() -> Result<Vec<Platform>, ClError> {
    platform_count()?;
    let ids = ocl::core::get_platform_ids()
        .map_err(|e| ClError::NoPlatform(format!("platform list: {e}")))?;
    Ok(Platform::list_from_core(ids))
}

fn info_u64(d: &Device, kind: DeviceInfo) -> u64 {
    match d.info(kind) {
        Ok(DeviceInfoResult::GlobalMemSize(v)) | Ok(DeviceInfoResult::MaxMemAllocSize(v)) => v,
        Ok(DeviceInfoResult::MaxComputeUnits(v)) => u64::from(v),
        _ => 0,
    }
}

fn describe(index: usize, platform: &Platform, d: &Device) -> ClDeviceInfo {
    let kind = match d.info(DeviceInfo::Type) {
        Ok(DeviceInfoResult::Type(t)) if t.contains(DeviceType::GPU) => "gpu",
        Ok(DeviceInfoResult::Type(t)) if t.contains(DeviceType::CPU) => "cpu",
        Ok(DeviceInfoResult::Type(t)) if t.contains(DeviceType::ACCELERATOR) => "accelerator",
        _ => "other",
    };
    ClDeviceInfo {
        index,
        platform: platform.name().unwrap_or_default(),
        name: d.name().unwrap_or_default(),
        vendor: d.vendor().unwrap_or_default(),
        kind: kind.to_string(),
        global_mem: info_u64(d, DeviceInfo::GlobalMemSize),
        max_alloc: info_u64(d, DeviceInfo::MaxMemAllocSize),
        compute_units: info_u64(d, DeviceInfo::MaxComputeUnits) as u32,
        version: d
            .info(DeviceInfo::Version)
            .map(|v| v.to_string())
            .unwrap_or_default(),
    }
}

/// Serialises discovery and context/program creation: the ICD loader's and PoCL's first-time
/// initialisation is not thread-safe (concurrent opens here listed no device or crashed).
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn all_devices() -> Result<Vec<(Platform, Device, ClDeviceInfo)>, ClError> {
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for p in platforms()? {
        // A platform whose device query fails is skipped, not fatal, unless none answers.
        match Device::list_all(p) {
            Ok(list) => {
                for d in list {
                    let info = describe(out.len(), &p, &d);
                    out.push((p, d, info));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", p.name().unwrap_or_default())),
        }
    }
    if out.is_empty() && !failures.is_empty() {
        return Err(ClError::NoDevice(failures.join("; ")));
    }
    Ok(out)
}

/// Every OpenCL device on every platform.
pub fn devices() -> Result<Vec<ClDeviceInfo>, ClError> {
    Ok(all_devices()?.into_iter().map(|(_, _, i)| i).collect())
}

/// A light cache on the device.
#[derive(Debug)]
struct DeviceCache {
    info: EpochInfo,
    buf: Buffer<u32>,
    nodes: u32,
}

/// One resident dataset slot.
#[derive(Debug)]
struct Slot {
    cache: DeviceCache,
    bufs: Vec<Buffer<u32>>,
    /// Rows (128 bytes) per buffer; the last buffer may hold fewer.
    split_rows: u32,
    rows: u32,
    /// Items generated so far (generation goes in steps between batches).
    done_items: u64,
}

impl Slot {
    fn total_items(&self) -> u64 {
        u64::from(self.rows) * 2
    }
}

/// Grow-only input/output buffers for batches.
#[derive(Debug)]
struct Io {
    cap: usize,
    headers: Buffer<u64>,
    nonces: Buffer<u64>,
    slots: Buffer<u32>,
    out: Buffer<u64>,
}

/// The OpenCL ethash engine on one device: program, kernels, slots.
#[derive(Debug)]
pub struct ClEngine {
    info: ClDeviceInfo,
    queue: Queue,
    k_items: Kernel,
    k_full: Kernel,
    k_light: Kernel,
    wg: usize,
    slots: [Option<Slot>; SLOTS],
    light: Vec<DeviceCache>,
    io: Option<Io>,
    dummy: Buffer<u32>,
}

impl ClEngine {
    /// Opens device `index` (over all platforms), or in auto mode the first GPU, else the first
    /// device; builds the program.
    pub fn open(index: Option<usize>) -> Result<Self, ClError> {
        let devices = all_devices()?;
        let chosen = match index {
            Some(i) => devices.get(i).ok_or_else(|| {
                ClError::NoDevice(format!("--opencl-device {i}: {} device(s)", devices.len()))
            })?,
            None => devices
                .iter()
                .find(|(_, _, i)| i.kind == "gpu")
                .or_else(|| devices.first())
                .ok_or_else(|| ClError::NoDevice("the platforms list no device".into()))?,
        };
        let (platform, device, info) = chosen.clone();
        let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
        let context = Context::builder()
            .platform(platform)
            .devices(device)
            .build()
            .map_err(|e| cl_err("context", e))?;
        let queue = Queue::new(&context, device, None).map_err(|e| cl_err("queue", e))?;
        let program = Program::builder()
            .src(KERNEL_SOURCE)
            .devices(device)
            .build(&context)
            .map_err(|e| ClError::Build(e.to_string()))?;
        let wg = device.max_wg_size().unwrap_or(64).clamp(1, WORK_GROUP);
        let dummy = Buffer::<u32>::builder()
            .queue(queue.clone())
            .len(16)
            .build()
            .map_err(|e| cl_err("buffer", e))?;
        let none32 = None::<&Buffer<u32>>;
        let none64 = None::<&Buffer<u64>>;
        let k_items = Kernel::builder()
            .program(&program)
            .name("dag_items")
            .queue(queue.clone())
            .arg(none32)
            .arg(0u32)
            .arg(none32)
            .arg(0u64)
            .arg(0u64)
            .arg(0u32)
            .build()
            .map_err(|e| ClError::Build(format!("dag_items: {e}")))?;
        let mut b = Kernel::builder();
        b.program(&program)
            .name("hashimoto_full")
            .queue(queue.clone())
            .arg(none64)
            .arg(none64)
            .arg(none32)
            .arg(none64)
            .arg(0u32);
        for _ in 0..SLOTS {
            b.arg(0u32).arg(0u32);
            for _ in 0..MAX_SPLIT_BUFFERS {
                b.arg(none32);
            }
        }
        let k_full = b
            .build()
            .map_err(|e| ClError::Build(format!("hashimoto_full: {e}")))?;
        let k_light = Kernel::builder()
            .program(&program)
            .name("hashimoto_light")
            .queue(queue.clone())
            .arg(none64)
            .arg(none64)
            .arg(none64)
            .arg(0u32)
            .arg(none32)
            .arg(0u32)
            .arg(0u32)
            .build()
            .map_err(|e| ClError::Build(format!("hashimoto_light: {e}")))?;
        Ok(Self {
            info,
            queue,
            k_items,
            k_full,
            k_light,
            wg,
            slots: [None, None],
            light: Vec::new(),
            io: None,
            dummy,
        })
    }

    /// The device in use.
    pub fn device(&self) -> &ClDeviceInfo {
        &self.info
    }

    /// The work-group size of every launch (global sizes are rounded up to it).
    pub fn work_group_size(&self) -> usize {
        self.wg
    }

    fn global(&self, n: usize) -> usize {
        n.div_ceil(self.wg) * self.wg
    }

    fn upload_cache(&self, cache: &LightCache) -> Result<DeviceCache, ClError> {
        let words: &[u32] = bytemuck::cast_slice(cache.nodes());
        let buf = Buffer::<u32>::builder()
            .queue(self.queue.clone())
            .flags(MemFlags::new().read_only())
            .len(words.len().max(1))
            .copy_host_slice(words)
            .build()
            .map_err(|e| cl_err("cache upload", e))?;
        Ok(DeviceCache {
            info: *cache.info(),
            buf,
            nodes: cache.nodes().len() as u32,
        })
    }

    /// Bytes a slot for this epoch takes on the device (dataset and cache).
    pub fn slot_bytes(info: &EpochInfo) -> u64 {
        info.dataset_size + info.cache_size
    }

    /// Starts a dataset in `slot` for the cache's epoch: uploads the cache once and allocates
    /// the buffers, each at most `split_bytes` (default: the device's max allocation).
    /// Generation then runs in [`Self::generate_step`]s. Replaces what the slot held.
    pub fn begin_slot(
        &mut self,
        slot: usize,
        cache: &LightCache,
        split_bytes: Option<u64>,
    ) -> Result<(), ClError> {
        self.slots[slot] = None;
        let info = *cache.info();
        let rows = info.dataset_size / MIX_BYTES;
        let limit = split_bytes
            .unwrap_or(self.info.max_alloc)
            .min(self.info.max_alloc.max(MIX_BYTES));
        let split_rows = (limit / MIX_BYTES).max(1);
        let nbufs = rows.div_ceil(split_rows) as usize;
        if nbufs > MAX_SPLIT_BUFFERS {
            return Err(ClError::OutOfMemory(format!(
                "dataset of {} bytes needs {nbufs} buffers of at most {} bytes; the kernel takes {MAX_SPLIT_BUFFERS}",
                info.dataset_size,
                split_rows * MIX_BYTES
            )));
        }
        let dcache = self.upload_cache(cache)?;
        let mut bufs = Vec::with_capacity(nbufs);
        for b in 0..nbufs as u64 {
            let these = split_rows.min(rows - b * split_rows);
            let buf = Buffer::<u32>::builder()
                .queue(self.queue.clone())
                .len((these * MIX_BYTES / 4) as usize)
                .build()
                .map_err(|e| cl_err("dataset buffer", e))?;
            bufs.push(buf);
        }
        self.slots[slot] = Some(Slot {
            cache: dcache,
            bufs,
            split_rows: split_rows as u32,
            rows: rows as u32,
            done_items: 0,
        });
        Ok(())
    }

    /// Generates up to `max_items` more items of `slot`'s dataset; returns true when complete.
    pub fn generate_step(&mut self, slot: usize, max_items: u64) -> Result<bool, ClError> {
        let Some(s) = self.slots[slot].as_mut() else {
            return Ok(true);
        };
        let total = s.total_items();
        if s.done_items >= total {
            return Ok(true);
        }
        let split_items = u64::from(s.split_rows) * 2;
        let first = s.done_items;
        let b = (first / split_items) as usize;
        let buf_first = b as u64 * split_items;
        let buf_end = (buf_first + split_items).min(total);
        let count = max_items.max(1).min(buf_end - first);
        let k = &self.k_items;
        k.set_arg(0, &s.cache.buf).map_err(|e| cl_err("arg", e))?;
        k.set_arg(1, s.cache.nodes).map_err(|e| cl_err("arg", e))?;
        k.set_arg(2, &s.bufs[b]).map_err(|e| cl_err("arg", e))?;
        k.set_arg(3, buf_first).map_err(|e| cl_err("arg", e))?;
        k.set_arg(4, first - buf_first)
            .map_err(|e| cl_err("arg", e))?;
        k.set_arg(5, count as u32).map_err(|e| cl_err("arg", e))?;
        let gws = (count as usize).div_ceil(self.wg) * self.wg;
        // SAFETY: every argument is bound above to a live buffer of the size the kernel indexes
        // (writes are guarded by `count`, within buffer `b`).
        #[allow(unsafe_code)]
        unsafe {
            k.cmd()
                .global_work_size(gws)
                .local_work_size(self.wg)
                .enq()
                .map_err(|e| cl_err("dag_items", e))?;
        }
        self.queue.finish().map_err(|e| cl_err("dag_items", e))?;
        s.done_items = first + count;
        Ok(s.done_items >= total)
    }

    /// Begins and completes a slot (tests, benchmarks, start-up).
    pub fn generate_slot(
        &mut self,
        slot: usize,
        cache: &LightCache,
        split_bytes: Option<u64>,
    ) -> Result<(), ClError> {
        self.begin_slot(slot, cache, split_bytes)?;
        while !self.generate_step(slot, 1 << 22)? {}
        Ok(())
    }

    /// The epoch in `slot` and whether its dataset is complete.
    pub fn slot_state(&self, slot: usize) -> Option<(EpochInfo, bool)> {
        self.slots[slot]
            .as_ref()
            .map(|s| (s.cache.info, s.done_items >= s.total_items()))
    }

    /// The epoch in `slot` and the share of its dataset generated (0 to 1).
    pub fn slot_progress(&self, slot: usize) -> Option<(EpochInfo, f64)> {
        self.slots[slot].as_ref().map(|s| {
            let total = s.total_items().max(1);
            (s.cache.info, s.done_items.min(total) as f64 / total as f64)
        })
    }

    /// Dataset buffers of `slot` (1 unless split).
    pub fn slot_buffers(&self, slot: usize) -> usize {
        self.slots[slot].as_ref().map_or(0, |s| s.bufs.len())
    }

    /// Frees a slot.
    pub fn free_slot(&mut self, slot: usize) {
        self.slots[slot] = None;
    }

    /// Reads a slot's dataset back (tests): the same little-endian image as the CPU dataset.
    pub fn read_dataset(&self, slot: usize) -> Result<Vec<u8>, ClError> {
        let Some(s) = self.slots[slot].as_ref() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(s.rows as usize * MIX_BYTES as usize);
        for buf in &s.bufs {
            let mut words = vec![0u32; buf.len()];
            buf.read(&mut words)
                .enq()
                .map_err(|e| cl_err("dataset read", e))?;
            out.extend_from_slice(bytemuck::cast_slice(&words));
        }
        Ok(out)
    }

    /// Keeps a device copy of a light cache for epochs without a slot (at most `keep`, newest
    /// kept).
    pub fn ensure_light(&mut self, cache: &LightCache, keep: usize) -> Result<(), ClError> {
        if self.light.iter().any(|c| c.info == *cache.info()) {
            return Ok(());
        }
        let dc = self.upload_cache(cache)?;
        self.light.push(dc);
        while self.light.len() > keep.max(1) {
            self.light.remove(0);
        }
        Ok(())
    }

    /// Whether the device holds a light cache for this epoch (a slot's or a separate one).
    pub fn has_light(&self, info: &EpochInfo) -> bool {
        self.light.iter().any(|c| c.info == *info)
            || self.slots.iter().flatten().any(|s| s.cache.info == *info)
    }

    fn io(&mut self, n: usize) -> Result<&Io, ClError> {
        if self.io.as_ref().is_none_or(|io| io.cap < n) {
            let cap = n.next_power_of_two().max(self.wg);
            let q = &self.queue;
            let mk64 = |len: usize| {
                Buffer::<u64>::builder()
                    .queue(q.clone())
                    .len(len)
                    .build()
                    .map_err(|e| cl_err("batch buffer", e))
            };
            let io = Io {
                cap,
                headers: mk64(cap * 4)?,
                nonces: mk64(cap)?,
                slots: Buffer::<u32>::builder()
                    .queue(q.clone())
                    .len(cap)
                    .build()
                    .map_err(|e| cl_err("batch buffer", e))?,
                out: mk64(cap * 8)?,
            };
            self.io = Some(io);
        }
        self.io_ref()
    }

    fn upload_inputs<'a>(
        &mut self,
        inputs: impl Iterator<Item = &'a PowInput>,
        n: usize,
    ) -> Result<(), ClError> {
        let mut headers = Vec::with_capacity(n * 4);
        let mut nonces = Vec::with_capacity(n);
        for i in inputs {
            headers.extend_from_slice(&bytemuck::cast::<[u8; 32], [u64; 4]>(i.header_hash));
            nonces.push(i.nonce);
        }
        let io = self.io(n)?;
        io.headers
            .write(&headers)
            .enq()
            .map_err(|e| cl_err("upload", e))?;
        io.nonces
            .write(&nonces)
            .enq()
            .map_err(|e| cl_err("upload", e))?;
        Ok(())
    }

    fn io_ref(&self) -> Result<&Io, ClError> {
        self.io
            .as_ref()
            .ok_or_else(|| ClError::Device("batch buffers missing".into()))
    }

    fn read_outputs(&self, n: usize) -> Result<Vec<PowOutput>, ClError> {
        let io = self.io_ref()?;
        let mut words = vec![0u64; n * 8];
        io.out
            .read(&mut words)
            .enq()
            .map_err(|e| cl_err("read results", e))?;
        Ok(words
            .chunks_exact(8)
            .map(|w| {
                let mix: [u64; 4] = [w[0], w[1], w[2], w[3]];
                let res: [u64; 4] = [w[4], w[5], w[6], w[7]];
                PowOutput {
                    mix_digest: bytemuck::cast(mix),
                    result: bytemuck::cast(res),
                }
            })
            .collect())
    }

    /// Hashimoto over resident datasets: input `k` uses slot `jobs[k].0`, which must be
    /// complete.
    pub fn hash_full(&mut self, jobs: &[(usize, PowInput)]) -> Result<Vec<PowOutput>, ClError> {
        let n = jobs.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        for (slot, _) in jobs {
            match self.slot_state(*slot) {
                Some((_, true)) => {}
                _ => return Err(ClError::Device(format!("slot {slot} has no dataset"))),
            }
        }
        self.upload_inputs(jobs.iter().map(|(_, i)| i), n)?;
        let slots: Vec<u32> = jobs.iter().map(|(s, _)| *s as u32).collect();
        let gws = self.global(n);
        self.io(n)?;
        let io = self.io_ref()?;
        let k = &self.k_full;
        let arg = |e| cl_err("arg", e);
        io.slots
            .write(&slots)
            .enq()
            .map_err(|e| cl_err("upload", e))?;
        k.set_arg(0, &io.headers).map_err(arg)?;
        k.set_arg(1, &io.nonces).map_err(arg)?;
        k.set_arg(2, &io.slots).map_err(arg)?;
        k.set_arg(3, &io.out).map_err(arg)?;
        k.set_arg(4, n as u32).map_err(arg)?;
        for s in 0..SLOTS {
            let base = 5 + s * (2 + MAX_SPLIT_BUFFERS);
            let (rows, split, bufs) = match &self.slots[s] {
                Some(sl) => (sl.rows, sl.split_rows, &sl.bufs[..]),
                None => (1, 1, &[][..]),
            };
            k.set_arg(base, rows).map_err(arg)?;
            k.set_arg(base + 1, split).map_err(arg)?;
            for b in 0..MAX_SPLIT_BUFFERS {
                k.set_arg(base + 2 + b, bufs.get(b).unwrap_or(&self.dummy))
                    .map_err(arg)?;
            }
        }
        // SAFETY: all buffers are bound and sized for `n` inputs (the kernel guards its global
        // id against `n`); dataset rows are taken modulo the slot's row count and each split
        // buffer holds `split` rows.
        #[allow(unsafe_code)]
        unsafe {
            k.cmd()
                .global_work_size(gws)
                .local_work_size(self.wg)
                .enq()
                .map_err(|e| cl_err("hashimoto_full", e))?;
        }
        self.read_outputs(n)
    }

    /// Hashimoto from the light cache of `info`'s epoch (uploaded by [`Self::ensure_light`] or
    /// held by a slot).
    pub fn hash_light(
        &mut self,
        info: &EpochInfo,
        inputs: &[PowInput],
    ) -> Result<Vec<PowOutput>, ClError> {
        let n = inputs.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        self.upload_inputs(inputs.iter(), n)?;
        let gws = self.global(n);
        self.io(n)?;
        let cache = self
            .light
            .iter()
            .find(|c| c.info == *info)
            .or_else(|| {
                self.slots
                    .iter()
                    .flatten()
                    .map(|s| &s.cache)
                    .find(|c| c.info == *info)
            })
            .ok_or_else(|| ClError::Device(format!("no light cache for epoch {}", info.epoch)))?;
        let io = self.io_ref()?;
        let k = &self.k_light;
        let arg = |e| cl_err("arg", e);
        k.set_arg(0, &io.headers).map_err(arg)?;
        k.set_arg(1, &io.nonces).map_err(arg)?;
        k.set_arg(2, &io.out).map_err(arg)?;
        k.set_arg(3, n as u32).map_err(arg)?;
        k.set_arg(4, &cache.buf).map_err(arg)?;
        k.set_arg(5, cache.nodes).map_err(arg)?;
        k.set_arg(6, (info.dataset_size / MIX_BYTES) as u32)
            .map_err(arg)?;
        // SAFETY: buffers bound and sized for `n` inputs; cache parents are taken modulo the
        // node count.
        #[allow(unsafe_code)]
        unsafe {
            k.cmd()
                .global_work_size(gws)
                .local_work_size(self.wg)
                .enq()
                .map_err(|e| cl_err("hashimoto_light", e))?;
        }
        self.read_outputs(n)
    }

    /// Whether two slots of this size fit in `limit` bytes of device memory (default: the
    /// device's global memory), leaving room for caches and batch buffers.
    pub fn fits_slots(&self, info: &EpochInfo, count: u64, limit: Option<u64>) -> bool {
        let mem = limit.unwrap_or(self.info.global_mem);
        let margin = 64 << 20;
        count * Self::slot_bytes(info) + margin.min(mem / 8) <= mem
    }
}
