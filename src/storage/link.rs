//! The connection to the pool's Redis: one address, or the master that Redis Sentinel names
//! (looked up again when the master is lost or turns read-only after a failover), and the
//! optional `WAIT` for replicas after each write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError, ServerErrorKind};
use tokio::time::Instant;

use super::{redacted, StorageError};

/// Each connection attempt gives up after this long, so a dead Redis fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Each command gives up after this long (a batch script of thousands of shares takes a few ms).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A master lookup (sentinels asked, the master's role checked) gives up after this long.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Failed commands start at most one master lookup per this interval.
const LOOKUP_GAP: Duration = Duration::from_millis(200);

/// Where the pool's Redis is and how sure a write must be.
#[derive(Clone, Debug, Default)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]` or `host:port`. With sentinels, only its
    /// credentials and db are used: the address is the master's.
    pub url: String,
    /// Redis Sentinel addresses (`host:port`); empty: connect to `url` directly.
    pub sentinels: Vec<String>,
    /// The master's name in Sentinel (`sentinel monitor <name> …`).
    pub master_name: String,
    /// The sentinels' own password, if they require one.
    pub sentinel_password: Option<String>,
    /// After each share or block write, wait until this many replicas have it (`WAIT`); a
    /// write not replicated in time is reported as not stored. 0: do not wait.
    pub wait_replicas: u32,
    /// How long `WAIT` may take.
    pub wait_timeout: Duration,
    /// With sentinels, also look the master up this often while writes succeed (`None`: only
    /// when a write fails). A master cut off from the sentinels may go on accepting writes
    /// after they promoted another; only a lookup tells, and what it takes meanwhile is lost
    /// when it rejoins as a replica.
    pub sentinel_recheck: Option<Duration>,
}

impl RedisOptions {
    /// A direct connection to `url`, no replica wait.
    pub fn url(url: &str) -> Self {
        Self {
            url: url.to_string(),
            ..Self::default()
        }
    }
}

/// `redis://` is optional: open-ethereum-pool configs give `host:port`.
pub(super) fn normalize_url(url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else {
        format!("redis://{url}")
    }
}

/// No Nagle: with batches pipelined on the one connection, a batch written while the previous
/// is unacknowledged would wait for Redis's reply to it (or for a 40 ms delayed ACK when a
/// large batch goes out in pieces), not for Redis.
fn tcp() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

/// Whether an error says the master may have moved: it is gone, or it is a replica now.
pub(super) fn master_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// A connection that callers clone per command, replaced when Sentinel names a new master.
pub(super) struct Link {
    current: RwLock<Current>,
    sentinel: Option<SentinelLookup>,
    wait: Option<(u32, Duration)>,
}

struct Current {
    con: ConnectionManager,
    /// `host:port`, for logs and to tell a new master from the same one.
    addr: String,
}

struct SentinelLookup {
    sentinel: tokio::sync::Mutex<Sentinel>,
    master_name: String,
    node: SentinelNodeConnectionInfo,
    running: AtomicBool,
    last: Mutex<Option<Instant>>,
    /// Lookups in a row that no sentinel answered (0 once one does).
    failing: AtomicU64,
}

impl Link {
    /// Connects as `opts` say: to the URL, or to the master the sentinels name.
    pub async fn connect(opts: &RedisOptions) -> Result<Arc<Self>, StorageError> {
        let full = normalize_url(&opts.url);
        let url_error = |source| StorageError::Url {
            url: redacted(&full),
            source,
        };
        let info = full
            .as_str()
            .into_connection_info()
            .map_err(url_error)?
            .set_tcp_settings(tcp());
        let wait = (opts.wait_replicas > 0).then_some((opts.wait_replicas, opts.wait_timeout));
        if opts.sentinels.is_empty() {
            let addr = info.addr().to_string();
            let con = manage(redis::Client::open(info).map_err(url_error)?, &full).await?;
            return Ok(Arc::new(Self {
                current: RwLock::new(Current { con, addr }),
                sentinel: None,
                wait,
            }));
        }
        let sentinels = opts
            .sentinels
            .iter()
            .map(|s| {
                let mut i = normalize_url(s).as_str().into_connection_info()?;
                if let Some(pw) = &opts.sentinel_password {
                    let r = i.redis_settings().clone().set_password(pw);
                    i = i.set_redis_settings(r);
                }
                Ok(i.set_tcp_settings(tcp()))
            })
            .collect::<Result<Vec<ConnectionInfo>, RedisError>>()
            .map_err(|source| StorageError::Url {
                url: opts.sentinels.join(","),
                source,
            })?;
        let sentinel = Sentinel::build(sentinels).map_err(|source| StorageError::Url {
            url: opts.sentinels.join(","),
            source,
        })?;
        let lookup = SentinelLookup {
            sentinel: tokio::sync::Mutex::new(sentinel),
            master_name: opts.master_name.clone(),
            node: SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(info.redis_settings().clone())
                .set_tcp_settings(tcp()),
            running: AtomicBool::new(false),
            last: Mutex::new(None),
            failing: AtomicU64::new(0),
        };
        let client = lookup.master().await?;
        let addr = addr_of(&client);
        let con = manage(client, &addr).await?;
        tracing::info!(master = %lookup.master_name, %addr, "redis master from sentinel");
        let link = Arc::new(Self {
            current: RwLock::new(Current { con, addr }),
            sentinel: Some(lookup),
            wait,
        });
        if let Some(every) = opts.sentinel_recheck.filter(|d| !d.is_zero()) {
            tokio::spawn(recheck(Arc::downgrade(&link), every));
        }
        Ok(link)
    }

    /// Starts a lookup of the master in the background unless one is running or began
    /// under [`LOOKUP_GAP`] ago.
    fn lookup(self: &Arc<Self>) {
        let Some(lookup) = &self.sentinel else { return };
        if !lookup.start() {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            link.relocate().await;
            if let Some(l) = &link.sentinel {
                l.running.store(false, Ordering::Release);
            }
        });
    }

    /// The connection to use now (cheap: a handle on the one multiplexed connection).
    pub fn con(&self) -> ConnectionManager {
        self.read().con.clone()
    }

    /// The Redis in use, `host:port`.
    pub fn addr(&self) -> String {
        self.read().addr.clone()
    }

    /// With sentinels, the master lookups in a row that none answered; `None` without.
    pub fn sentinel_failures(&self) -> Option<u64> {
        self.sentinel
            .as_ref()
            .map(|l| l.failing.load(Ordering::Acquire))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Turns a failed command's error into a storage error. With sentinels, an error saying
    /// the master is gone or read-only starts a lookup of the master in the background (one at
    /// a time, at most one per [`LOOKUP_GAP`]); the write itself is not retried, so its shares
    /// are answered as not stored and the miner resubmits.
    pub fn failed(self: &Arc<Self>, e: RedisError) -> StorageError {
        if master_lost(&e) {
            self.lookup();
        }
        StorageError::Redis(e)
    }

    async fn relocate(&self) {
        let Some(lookup) = &self.sentinel else { return };
        let client = match lookup.master().await {
            Ok(client) => client,
            Err(e) => {
                lookup.failed(&e);
                return;
            }
        };
        lookup.answered();
        let addr = addr_of(&client);
        // Not moved (yet): the current connection reconnects on its own.
        if addr == self.addr() {
            return;
        }
        let con = match manage(client, &addr).await {
            Ok(con) => con,
            Err(e) => {
                tracing::warn!(master = %lookup.master_name, "new redis master: {e}");
                return;
            }
        };
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        tracing::warn!(
            master = %lookup.master_name, from = %current.addr, to = %addr,
            "redis master moved, switching"
        );
        *current = Current { con, addr };
    }

    /// After a write: with `waitReplicas`, waits until that many replicas acknowledged it.
    pub async fn replicated(self: &Arc<Self>) -> Result<(), StorageError> {
        let Some((wanted, within)) = self.wait else {
            return Ok(());
        };
        let mut con = self.con();
        let got: u32 = redis::cmd("WAIT")
            .arg(wanted)
            .arg(within.as_millis().max(1) as u64)
            .query_async(&mut con)
            .await
            .map_err(|e| self.failed(e))?;
        if got < wanted {
            return Err(StorageError::NotReplicated { wanted, got });
        }
        Ok(())
    }
}

impl SentinelLookup {
    /// Claims the next lookup, unless one is running or the last began under
    /// [`LOOKUP_GAP`] ago.
    fn start(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < LOOKUP_GAP) {
            return false;
        }
        if self.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Logs a failed lookup: the first of a run as a warning, the rest (one per recheck while
    /// the sentinels are away) at debug level.
    fn failed(&self, e: &StorageError) {
        let n = self.failing.fetch_add(1, Ordering::AcqRel) + 1;
        if n == 1 {
            tracing::warn!(master = %self.master_name, "redis master lookup: {e}");
        } else {
            tracing::debug!(master = %self.master_name, failed = n, "redis master lookup: {e}");
        }
    }

    fn answered(&self) {
        let n = self.failing.swap(0, Ordering::AcqRel);
        if n > 0 {
            tracing::info!(master = %self.master_name, failed = n, "sentinels answer again");
        }
    }

    /// Asks the sentinels for the master (redis-rs checks that it is one).
    async fn master(&self) -> Result<redis::Client, StorageError> {
        let find = async {
            let mut sentinel = self.sentinel.lock().await;
            sentinel
                .async_master_for(&self.master_name, Some(&self.node))
                .await
        };
        tokio::time::timeout(LOOKUP_TIMEOUT, find)
            .await
            .map_err(|_| StorageError::Lookup(format!("no answer in {LOOKUP_TIMEOUT:?}")))?
            .map_err(|e| StorageError::Lookup(e.to_string()))
    }
}

/// Looks the master up every `period` for as long as the link is in use.
async fn recheck(link: std::sync::Weak<Link>, period: Duration) {
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        every.tick().await;
        match link.upgrade() {
            Some(link) => link.lookup(),
            None => return,
        }
    }
}

/// A client's `host:port`.
fn addr_of(client: &redis::Client) -> String {
    client.get_connection_info().addr().to_string()
}

async fn manage(client: redis::Client, url: &str) -> Result<ConnectionManager, StorageError> {
    ConnectionManager::new_with_config(client, manager_config())
        .await
        .map_err(|source| StorageError::Connect {
            url: redacted(url),
            source,
        })
}
