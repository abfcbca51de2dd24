//! `dagproxy proxy`: wires the verifier, Redis, upstream nodes, share pipeline and both front
//! ends together, runs the periodic node-state and blacklist tasks, and shuts down in order
//! (stop accepting, finish in-flight shares, flush them to Redis, exit).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Checked, Config, ProxyArgs};
use crate::ethash::target::target_hex;
use crate::http::HttpSettings;
use crate::pipeline::{Pipeline, ShareWriter};
use crate::policy::Policy;
use crate::storage::{RedisStore, StorageError};
use crate::stratum::message::{ErrorReply, WORK_NOT_READY};
use crate::stratum::StratumSettings;
use crate::upstream::{RpcError, UpstreamSettings, Upstreams};
use crate::verify::{Verifier, VerifyError};

/// How long shutdown waits for each of: front ends to drain, the share writer to flush.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How often share counts are logged.
const STATS_LOG: Duration = Duration::from_secs(60);

/// Errors that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The verifier could not start.
    #[error("verifier: {0}")]
    Verifier(#[from] VerifyError),
    /// Redis is unreachable or the URL is wrong.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An upstream client could not be built.
    #[error("upstream: {0}")]
    Upstream(#[from] RpcError),
    /// The metrics listen address is not valid.
    #[error(transparent)]
    Metrics(#[from] crate::observe::ObserveError),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// State shared by both front ends.
#[derive(Debug)]
pub struct Context {
    /// Upstream nodes and the current template.
    pub upstreams: Arc<Upstreams>,
    /// The share pipeline.
    pub pipeline: Pipeline,
    /// Stratum limits.
    pub stratum: StratumSettings,
    /// HTTP limits.
    pub http: HttpSettings,
    /// Bans, connection limits, black/whitelists.
    pub policy: Arc<Policy>,
    /// EthereumStratum/1.0.0 extranonces, unique across both Stratum ports.
    pub extranonces: Arc<crate::stratum::nicehash::ExtranonceAllocator>,
    /// Open Stratum sessions by dialect.
    pub sessions: crate::stratum::Sessions,
    share_target_hex: String,
}

impl Context {
    /// Shared state for the front ends.
    pub fn new(
        upstreams: Arc<Upstreams>,
        pipeline: Pipeline,
        stratum: StratumSettings,
        http: HttpSettings,
        policy: Arc<Policy>,
    ) -> Self {
        let share_target_hex = target_hex(pipeline.share_target());
        Self {
            upstreams,
            pipeline,
            stratum,
            http,
            policy,
            extranonces: crate::stratum::nicehash::ExtranonceAllocator::new(
                crate::stratum::nicehash_server::EXTRANONCE_BYTES,
            ),
            sessions: crate::stratum::Sessions::default(),
            share_target_hex,
        }
    }

    /// The current header and the getWork result `[header, seed, share target]`, or
    /// "Work not ready" when there is no template or the proxy is sick.
    pub fn work(&self) -> Result<([u8; 32], Value), ErrorReply> {
        let t = self.upstreams.work().ok_or(WORK_NOT_READY)?;
        Ok((
            t.header,
            json!([t.header_hex, t.seed_hex, self.share_target_hex]),
        ))
    }

    /// The cached pending block with the share difficulty, as open-ethereum-pool answers
    /// eth_getBlockByNumber; null without a template.
    pub fn pending_block(&self) -> Value {
        match self.upstreams.template() {
            Some(t) => json!({
                "number": format!("0x{:x}", t.height),
                "difficulty": format!("0x{:x}", self.pipeline.difficulty()),
            }),
            None => Value::Null,
        }
    }

    /// Whether a login is in the Redis blacklist (as last loaded).
    pub fn is_blacklisted(&self, login: &str) -> bool {
        self.policy.is_blacklisted(login)
    }
}

/// Already-bound listeners; `None` disables a front end.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Stratum.
    pub stratum: Option<TcpListener>,
    /// HTTP getwork.
    pub http: Option<TcpListener>,
    /// `/metrics`, `/health`, `/stats`.
    pub metrics: Option<TcpListener>,
    /// EthereumStratum/1.0.0 (NiceHash).
    pub nicehash: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(c: &Checked) -> Result<Self, ProxyError> {
        async fn bind(
            addr: Option<std::net::SocketAddr>,
        ) -> Result<Option<TcpListener>, ProxyError> {
            match addr {
                None => Ok(None),
                Some(addr) => TcpListener::bind(addr)
                    .await
                    .map(Some)
                    .map_err(|source| ProxyError::Bind { addr, source }),
            }
        }
        Ok(Self {
            stratum: bind(c.stratum_addr).await?,
            http: bind(c.http_addr).await?,
            metrics: bind(c.config.metrics.addr()?).await?,
            nicehash: bind(c.nicehash_addr).await?,
        })
    }
}

/// Runs the proxy until `shutdown`, then drains: front ends stop accepting and finish the
/// requests in hand, every acknowledged share is already in Redis, queued writes are flushed.
pub async fn run(
    listeners: Listeners,
    checked: Checked,
    shutdown: CancellationToken,
) -> Result<(), ProxyError> {
    let Checked { config, chain, .. } = checked;
    let verifier = Verifier::start(chain.clone(), config.verifier_config()).await?;
    tracing::info!(backend = %verifier.backend(), chain = %chain, "verifier started");
    let store = RedisStore::connect_with(
        &config.redis.options(),
        &config.redis.prefix,
        config.proxy.hashrate_expiration.0,
    )
    .await?;
    let upstreams = Arc::new(Upstreams::new(
        &config.upstream,
        UpstreamSettings {
            chain,
            block_refresh_interval: config.proxy.block_refresh_interval.0,
            check_interval: config.upstream_check_interval.0,
            health_check: config.proxy.health_check,
            max_fails: config.proxy.max_fails,
        },
        verifier.clone(),
    )?);
    if let Err(e) = upstreams.refresh().await {
        tracing::error!("no block template yet: {e}");
    }
    let (writer, writer_task) = ShareWriter::spawn(store.clone());
    let writer_stats = writer.stats();
    let pipeline = Pipeline::new(
        upstreams.clone(),
        verifier.clone(),
        store.clone(),
        writer,
        config.proxy.difficulty,
    );
    let ctx = Arc::new(Context::new(
        upstreams.clone(),
        pipeline,
        stratum_settings(&config),
        http_settings(&config),
        Arc::new(Policy::new(&config.proxy.policy)),
    ));

    // Background tasks stop only after the front ends have drained, so block submissions and
    // template refreshes keep working while in-flight shares finish.
    let background = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(upstreams.clone().run(background.clone()));
    tasks.spawn(node_state(
        upstreams.clone(),
        store.clone(),
        config.name.clone(),
        config.proxy.state_update_interval.0,
        background.clone(),
    ));
    // Black/whitelists loaded once before the front ends open, then refreshed in the background.
    ctx.policy.refresh(&store).await;
    tasks.spawn(ctx.policy.clone().run(store, background.clone()));
    tasks.spawn(stats_log(ctx.clone(), background.clone()));

    let mut front = tokio::task::JoinSet::new();
    if let Some(l) = listeners.stratum {
        tracing::info!(addr = ?l.local_addr().ok(), "stratum listening");
        front.spawn(crate::stratum::run(l, ctx.clone(), shutdown.clone()));
    }
    if let Some(l) = listeners.nicehash {
        tracing::info!(addr = ?l.local_addr().ok(), "EthereumStratum/1.0.0 listening");
        front.spawn(crate::stratum::nicehash_server::run(
            l,
            ctx.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(l) = listeners.http {
        tracing::info!(addr = ?l.local_addr().ok(), "http getwork listening");
        let app = crate::http::app(ctx.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let stop = shutdown.clone();
        front.spawn(async move {
            let served = axum::serve(l, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!("http server: {e}");
            }
        });
    }
    if let Some(l) = listeners.metrics {
        tracing::info!(addr = ?l.local_addr().ok(), "metrics listening");
        let observe = crate::observe::Observe::new(ctx.clone(), verifier.clone(), writer_stats);
        let app = crate::observe::app(Arc::new(observe));
        let stop = shutdown.clone();
        front.spawn(async move {
            if let Err(e) = axum::serve(l, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::error!("metrics server: {e}");
            }
        });
    }
    shutdown.cancelled().await;
    tracing::info!("stopping: draining connections");
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while front.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("front ends still busy after the drain timeout; stopping anyway");
        front.abort_all();
    }
    background.cancel();
    drop(ctx);
    while tasks.join_next().await.is_some() {}
    // Once the last pipeline handle is gone the writer flushes its queue and ends; a
    // connection stuck past the drain timeout may still hold one, so wait only so long.
    if tokio::time::timeout(DRAIN_TIMEOUT, writer_task)
        .await
        .is_err()
    {
        tracing::warn!("share writer still busy after the drain timeout");
    }
    verifier.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

fn stratum_settings(c: &Config) -> StratumSettings {
    StratumSettings {
        idle_timeout: c.proxy.stratum.timeout.0,
        max_connections: c.proxy.stratum.max_conn,
        max_line_length: c.proxy.stratum.max_line_length,
        vardiff: crate::vardiff::from_config(&c.proxy.stratum.vardiff),
    }
}

fn http_settings(c: &Config) -> HttpSettings {
    HttpSettings {
        limit_body_size: c.proxy.limit_body_size,
        limit_headers_size: c.proxy.limit_headers_size,
        behind_reverse_proxy: c.proxy.behind_reverse_proxy,
    }
}

/// WriteNodeState every `interval`: `nodes` fields `<name>:name|height|difficulty|lastBeat`.
async fn node_state(
    upstreams: Arc<Upstreams>,
    store: RedisStore,
    name: String,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(t) = upstreams.template() else {
            continue;
        };
        if let Err(e) = store.write_node_state(&name, t.height, &t.difficulty).await {
            tracing::warn!("node state not written: {e}");
        }
    }
}

/// Logs the share counts now and then, when they changed.
async fn stats_log(ctx: Arc<Context>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(STATS_LOG);
    tick.tick().await;
    let mut last = Vec::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = ctx.pipeline.counters().snapshot();
        if now != last {
            let line: Vec<String> = now.iter().map(|(k, v)| format!("{k}={v}")).collect();
            tracing::info!("shares since start: {}", line.join(" "));
            last = now;
        }
    }
}

/// The `dagproxy proxy` command: config errors exit 2, runtime errors 1.
pub fn main(args: &ProxyArgs) -> ExitCode {
    let checked = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let warm = crate::heap::hold(crate::heap::PROXY_WARM);
    tracing::debug!(bytes = warm, "heap faulted in and held");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listeners = Listeners::bind(&checked).await?;
        run(listeners, checked, crate::shutdown::on_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
