//! The share writer: one task that takes the shares arriving together and stores them with one
//! Redis round trip, answering each submitter only from the outcome of its own write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::storage::{BlockRecord, RedisStore, ShareRecord, StorageError, WriteOutcome};

/// Shares written per round trip at most.
pub const MAX_BATCH: usize = 1024;
/// Writes waiting at most before submitters wait for room (backpressure, not unbounded memory).
const QUEUE: usize = 16_384;

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
    errors: Arc<AtomicU64>,
}

impl ShareWriter {
    /// Starts the writer task.
    pub fn spawn(store: RedisStore) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let errors = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(store, rx, errors.clone()));
        (Self { tx, errors }, task)
    }

    /// Failed Redis round trips since start (for metrics; does not keep the writer alive).
    pub fn error_count(&self) -> Arc<AtomicU64> {
        self.errors.clone()
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

async fn run(store: RedisStore, mut rx: mpsc::Receiver<Job>, errors: Arc<AtomicU64>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        // Keep arrival order across blocks: shares before a block belong to its round.
        let mut shares: Vec<(ShareRecord, Reply)> = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Share(s, r) => shares.push((s, r)),
                Job::Block(b, r) => {
                    flush(&store, &mut shares, &errors).await;
                    let (share, block) = *b;
                    let written = store.write_block(&share, &block).await;
                    if written.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = r.send(written);
                }
            }
        }
        flush(&store, &mut shares, &errors).await;
    }
}

async fn flush(store: &RedisStore, shares: &mut Vec<(ShareRecord, Reply)>, errors: &AtomicU64) {
    if shares.is_empty() {
        return;
    }
    let (batch, replies): (Vec<ShareRecord>, Vec<Reply>) = shares.drain(..).unzip();
    match store.write_shares(&batch).await {
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
            errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(shares = batch.len(), "shares not stored: {why}");
            for reply in replies {
                let _ = reply.send(Err(StorageError::Reply(why.clone())));
            }
        }
    }
}
