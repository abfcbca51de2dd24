//! Upstream nodes and block templates: the node clients in order of preference, the health
//! check that fails over to the first healthy one, the template refresh loop, and the watch
//! channel that pushes every new template to the front ends at once.

pub mod rpc;
pub mod template;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::UpstreamConfig;
use crate::ethash::ChainSpec;
use crate::verify::Verifier;

pub use rpc::{PendingBlock, RpcClient, RpcError, Work};
pub use template::{BlockTemplate, HeaderInfo, TemplateError};

/// Errors of one template refresh.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The node call failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The node's template was refused.
    #[error("{node}: {source}")]
    Template {
        /// Upstream name.
        node: String,
        /// Why.
        source: TemplateError,
    },
}

/// Settings of the upstream side.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// Chain preset templates must agree with.
    pub chain: ChainSpec,
    /// Template poll interval.
    pub block_refresh_interval: Duration,
    /// Health-check interval.
    pub check_interval: Duration,
    /// Count consecutive failures towards "sick".
    pub health_check: bool,
    /// Consecutive failures that make the proxy sick.
    pub max_fails: u64,
}

/// The upstream nodes and the current template; shared by every front end.
#[derive(Debug)]
pub struct Upstreams {
    clients: Vec<RpcClient>,
    current: AtomicUsize,
    settings: UpstreamSettings,
    template: watch::Sender<Option<Arc<BlockTemplate>>>,
    refresh_now: Notify,
    upstream_fails: AtomicU64,
    storage_fails: AtomicU64,
    verifier: Verifier,
}

impl Upstreams {
    /// Clients for the configured nodes (no I/O yet).
    pub fn new(
        nodes: &[UpstreamConfig],
        settings: UpstreamSettings,
        verifier: Verifier,
    ) -> Result<Self, RpcError> {
        let clients = nodes
            .iter()
            .map(|n| RpcClient::new(&n.name, &n.url, n.timeout.0))
            .collect::<Result<Vec<_>, _>>()?;
        if clients.is_empty() {
            return Err(RpcError::NoUpstream);
        }
        Ok(Self {
            clients,
            current: AtomicUsize::new(0),
            settings,
            template: watch::Sender::new(None),
            refresh_now: Notify::new(),
            upstream_fails: AtomicU64::new(0),
            storage_fails: AtomicU64::new(0),
            verifier,
        })
    }

    /// The chain preset.
    pub fn chain(&self) -> &ChainSpec {
        &self.settings.chain
    }

    /// The node in use now.
    pub fn current(&self) -> &RpcClient {
        // `new` refuses an empty list and `current` only holds indices of `clients`.
        &self.clients[self.current.load(Ordering::Relaxed)]
    }

    /// Index of the node in use now.
    pub fn current_index(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// The current template, if any.
    pub fn template(&self) -> Option<Arc<BlockTemplate>> {
        self.template.borrow().clone()
    }

    /// A receiver that sees every new template.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<BlockTemplate>>> {
        self.template.subscribe()
    }

    /// Work to hand out: none while there is no template or the proxy is sick.
    pub fn work(&self) -> Option<Arc<BlockTemplate>> {
        if self.is_sick() {
            return None;
        }
        self.template()
    }

    /// Consecutive failed template refreshes (reset by a good one).
    pub fn failures(&self) -> u64 {
        self.upstream_fails.load(Ordering::Relaxed)
    }

    /// Receivers watching for templates: one per open Stratum connection.
    pub fn subscribers(&self) -> usize {
        self.template.receiver_count()
    }

    /// Whether `maxFails` consecutive upstream or storage failures happened.
    pub fn is_sick(&self) -> bool {
        let max = self.settings.max_fails;
        self.settings.health_check
            && (self.upstream_fails.load(Ordering::Relaxed) >= max
                || self.storage_fails.load(Ordering::Relaxed) >= max)
    }

    /// Counts a storage write outcome towards sickness.
    pub fn storage_result(&self, ok: bool) {
        if ok {
            self.storage_fails.store(0, Ordering::Relaxed);
        } else {
            self.storage_fails.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Asks the refresh loop to poll the node now (after a block was found).
    pub fn refresh_soon(&self) {
        self.refresh_now.notify_one();
    }

    /// Polls the current node once; true when a new template was published.
    pub async fn refresh(&self) -> Result<bool, UpstreamError> {
        let result = self.refresh_inner().await;
        match &result {
            Ok(_) => self.upstream_fails.store(0, Ordering::Relaxed),
            Err(_) => {
                self.upstream_fails.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    async fn refresh_inner(&self) -> Result<bool, UpstreamError> {
        let node = self.current();
        let work = node.get_work().await?;
        let prev = self.template();
        if prev.as_ref().is_some_and(|p| p.header == work.header) {
            return Ok(false);
        }
        let pending = node.get_pending_block().await?;
        let next = BlockTemplate::next(&self.settings.chain, prev.as_deref(), &work, &pending)
            .map_err(|source| UpstreamError::Template {
                node: node.name.clone(),
                source,
            })?;
        let Some(next) = next else {
            return Ok(false);
        };
        if prev.as_ref().map(|p| p.height) != Some(next.height) {
            self.verifier.prepare(next.height);
            tracing::info!(
                node = %node.name, height = next.height, difficulty = %next.difficulty,
                "new block template"
            );
        } else {
            tracing::debug!(node = %node.name, height = next.height, "new header");
        }
        self.template.send_replace(Some(Arc::new(next)));
        Ok(true)
    }

    /// Health-checks every node and makes the first healthy one current.
    pub async fn check_upstreams(&self) {
        let mut candidate = None;
        for (i, c) in self.clients.iter().enumerate() {
            // Every node is checked so that sick ones can recover.
            if c.check().await && candidate.is_none() {
                candidate = Some(i);
            }
        }
        let i = candidate.unwrap_or(0);
        if self.current.swap(i, Ordering::Relaxed) != i {
            tracing::warn!(node = %self.clients[i].name, url = %self.clients[i].url, "switching upstream");
            self.refresh_soon();
        }
    }

    /// Submits a block solution to the current node, then to the others in order if the current
    /// one cannot be reached. `Ok(accepted)` from the first node that answered.
    pub async fn submit_work(
        &self,
        nonce: &str,
        header: &str,
        mix: &str,
    ) -> Result<bool, RpcError> {
        let first = self.current_index();
        let order = std::iter::once(first).chain((0..self.clients.len()).filter(|&i| i != first));
        let mut last = None;
        for i in order {
            match self.clients[i].submit_work(nonce, header, mix).await {
                Ok(accepted) => return Ok(accepted),
                Err(e @ RpcError::Http { .. }) => {
                    tracing::error!("block submission failed, trying the next node: {e}");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(RpcError::NoUpstream))
    }

    /// Runs the refresh and health-check loops until `shutdown`. Health checks run in their
    /// own task so a hanging node cannot delay template refreshes.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        let stop = shutdown.clone();
        let checker = tokio::spawn(async move {
            let mut check = tokio::time::interval(this.settings.check_interval);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = check.tick() => this.check_upstreams().await,
                }
            }
        });
        let mut refresh = tokio::time::interval(self.settings.block_refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut logged_error = false;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = refresh.tick() => {}
                () = self.refresh_now.notified() => {}
            }
            match self.refresh().await {
                Ok(_) => logged_error = false,
                // A refused template is always loud; a node outage once per run of failures.
                Err(e @ UpstreamError::Template { .. }) => tracing::error!("{e}"),
                Err(e) if !logged_error => {
                    tracing::error!("template refresh: {e}");
                    logged_error = true;
                }
                Err(_) => {}
            }
        }
        let _ = checker.await;
    }
}
