//! The share writer: one task that takes the shares arriving together and stores them with one
//! Redis round trip, answering each submitter only from the outcome of its own write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::observe::Histogram;
use crate::storage::{BlockRecord, RedisStore, ShareRecord, StorageError, WriteOutcome};

/// Shares written per round trip at most.
pub const MAX_BATCH: usize = 1024;
/// Share batches sent to Redis and not yet answered, at most.
const IN_FLIGHT: usize = 2;
/// Writes waiting at most before submitters wait for room (backpressure, not unbounded memory).
const QUEUE: usize = 16_384;

/// Batch-size buckets (shares).
const SIZES: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];
/// Round-trip buckets, microseconds.
const MICROS: &[u64] = &[
    250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// What the writer has done, for metrics.
#[derive(Debug)]
pub struct WriterStats {
    /// Failed Redis round trips (share batches and blocks).
    pub errors: AtomicU64,
    /// Shares per round trip.
    pub batch_sizes: Histogram,
    /// Time of each share batch's round trip (the script included).
    pub batch_seconds: Histogram,
}

impl Default for WriterStats {
    fn default() -> Self {
        Self {
            errors: AtomicU64::new(0),
            batch_sizes: Histogram::new(SIZES, 1.0),
            batch_seconds: Histogram::new(MICROS, 1e-6),
        }
    }
}

type Reply = oneshot::Sender<Result<WriteOutcome, StorageError>>;

#[derive(Debug)]
enum Job {
    Share(ShareRecord, Reply),
    Block(Box<(ShareRecord, BlockRecord)>, Reply),
}

/// Why a write has no outcome.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Redis failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The writer task is gone (shutting down).
    #[error("share writer stopped")]
    Stopped,
}

/// Handle to the writer task; cheap to clone. The task ends, after writing everything queued,
/// when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct ShareWriter {
    tx: mpsc::Sender<Job>,
    stats: Arc<WriterStats>,
}

impl ShareWriter {
    /// Starts the writer task.
    pub fn spawn(store: RedisStore) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let task = tokio::spawn(run(store, rx, stats.clone()));
        (Self { tx, stats }, task)
    }

    /// Counters and histograms since start (for metrics; does not keep the writer alive).
    pub fn stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    /// Stores a share; returns once Redis has it (or has refused it).
    pub async fn write_share(&self, share: ShareRecord) -> Result<WriteOutcome, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Share(share, reply), rx).await
    }

    /// Stores a found block's share, closing the round.
    pub async fn write_block(
        &self,
        share: ShareRecord,
        block: BlockRecord,
    ) -> Result<WriteOutcome, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Block(Box::new((share, block)), reply), rx)
            .await
    }

    async fn send(
        &self,
        job: Job,
        rx: oneshot::Receiver<Result<WriteOutcome, StorageError>>,
    ) -> Result<WriteOutcome, WriteError> {
        self.tx.send(job).await.map_err(|_| WriteError::Stopped)?;
        Ok(rx.await.map_err(|_| WriteError::Stopped)??)
    }
}

async fn run(store: RedisStore, mut rx: mpsc::Receiver<Job>, stats: Arc<WriterStats>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    // Batches sent and not yet answered. Redis runs them in the order sent on the one
    // connection; with the next batch already there, it never idles while this task gathers
    // shares, builds arguments or reads a reply.
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
            n = rx.recv_many(&mut jobs, MAX_BATCH), if in_flight.len() < IN_FLIGHT => {
                if n == 0 {
                    break;
                }
            }
        }
        // Keep arrival order across blocks: shares before a block belong to its round.
        let mut shares: Vec<(ShareRecord, Reply)> = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Share(s, r) => shares.push((s, r)),
                Job::Block(b, r) => {
                    if !shares.is_empty() {
                        in_flight.push(flush(&store, std::mem::take(&mut shares), &stats));
                    }
                    while in_flight.next().await.is_some() {}
                    let (share, block) = *b;
                    let written = store.write_block(&share, &block).await;
                    if written.is_err() {
                        stats.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = r.send(written);
                }
            }
        }
        if !shares.is_empty() {
            in_flight.push(flush(&store, shares, &stats));
        }
    }
    while in_flight.next().await.is_some() {}
}

async fn flush(store: &RedisStore, shares: Vec<(ShareRecord, Reply)>, stats: &WriterStats) {
    let (batch, replies): (Vec<ShareRecord>, Vec<Reply>) = shares.into_iter().unzip();
    stats.batch_sizes.observe(batch.len() as u64);
    let timer = stats.batch_seconds.timer_micros();
    let written = store.write_shares(&batch).await;
    drop(timer);
    match written {
        Ok(outcomes) if outcomes.len() == batch.len() => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        result => {
            let why = match result {
                Ok(o) => format!("{} outcomes for {} shares", o.len(), batch.len()),
                Err(e) => e.to_string(),
            };
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(shares = batch.len(), "shares not stored: {why}");
            for reply in replies {
                let _ = reply.send(Err(StorageError::Reply(why.clone())));
            }
        }
    }
}
