//! Local mode's embedded queue, dead letters and dedup memory, durable: one
//! SQLite file (write-ahead log, `synchronous=FULL`) in the data directory,
//! so a crash or restart loses nothing that was acknowledged.
//!
//! SQS's contract, in one process: a webhook is answered 202 only once its
//! message is committed; a received message is hidden for a visibility
//! timeout and counted; a failed one comes back after a delay; one received
//! [`MAX_RECEIVES`] times and failed again goes to the dead letters with its
//! `failure-reason` (as the router Lambda moves it), and one that reached
//! that count without ever failing (the process died each time) goes there
//! without one (as SQS's redrive policy moves it).
//!
//! Every read and write goes through one writer thread, which takes all the
//! operations waiting for it into one transaction (group commit): under
//! load, one fsync covers many webhooks rather than one each.

use crate::adapters::payloads;
use crate::core::claim_check::PayloadStore;
use crate::core::dedup::{self, Claim, Lease, SeenStore};
use crate::core::envelope::{
    ATTR_FAILED_RECEIVES, ATTR_FAILURE_REASON, ATTR_ID, QueueMessage, known_attribute, received_at,
};
use crate::core::outcome::Outcome;
use crate::core::queue::{Queue, QueueError, Webhook};
use crate::core::router::{Deliver, Record, Router};
use rusqlite::{Connection, OptionalExtension as _, Transaction, params};
use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tracing::{error, info, warn};

/// The database file in the data directory.
pub const DB_FILE: &str = "queue.sqlite3";
/// Held (locked) by the one `serve` that owns the data directory: it alone
/// may take back the deliveries a previous process left in flight.
pub const LOCK_FILE: &str = "serve.lock";

/// Receives after which a failing message is dead-lettered: the template's
/// `maxReceiveCount` (and `MAX_RECEIVE_COUNT`'s default).
pub const MAX_RECEIVES: u32 = 5;
/// How long a received message stays hidden from other receives: the router
/// queue's visibility timeout, which is also the dedup lease.
pub const VISIBILITY_TIMEOUT: Duration = dedup::DEFAULT_LEASE;
/// A failed message comes back after this delay times its receives.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Messages one receive takes, as the template's event source mapping does.
const BATCH: usize = 10;
/// Receive loops routing at once.
const WORKERS: usize = 4;
/// The most deliveries in flight at any moment; after a crash, at most
/// these can be delivered a second time.
pub const MAX_IN_FLIGHT: usize = BATCH * WORKERS;
/// How long an idle worker waits before looking for retries that came due.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// Operations one transaction takes at most, so a burst does not hold
/// every caller until one very large commit.
const GROUP_MAX: usize = 512;
/// Operations waiting for the writer before callers wait to add more.
const PENDING_MAX: usize = 4096;
/// How often delivered rows' space and expired dedup entries are reclaimed.
const CLEANUP_EVERY: Duration = Duration::from_secs(60);

/// The store could not be opened, read or written.
#[derive(Debug, Error)]
pub enum DurableError {
    #[error("data directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("data directory {0} is in use by another `nectar-webhooks serve`")]
    InUse(PathBuf),
    #[error("local queue store: {0}")]
    Sqlite(String),
    #[error("local queue store: stopped")]
    Stopped,
}

impl From<rusqlite::Error> for DurableError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Sqlite(err.to_string())
    }
}

/// One operation for the writer: runs inside the group's transaction and
/// returns what to tell its caller once the transaction's fate is known.
type Job = Box<dyn FnOnce(&Transaction<'_>, i64) -> (bool, Reply) + Send>;
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The durable store: queue, dead letters and dedup entries. Cheap to clone;
/// the writer thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct DurableStore {
    jobs: mpsc::Sender<Job>,
    arrived: Arc<Notify>,
    dedup_ttl: Duration,
}

/// What opening found left by the previous process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Messages waiting to be delivered (including those below).
    pub waiting: u64,
    /// Messages that were being delivered when it stopped: delivered again now.
    pub in_flight: u64,
    /// Dead letters waiting for `nectar-webhooks redrive --data-dir`.
    pub dead_letters: u64,
}

/// A message as a worker receives it.
#[derive(Debug)]
struct Received {
    id: i64,
    message: QueueMessage,
}

impl DurableStore {
    /// Opens (creating, private to its owner) `dir` and its database, takes
    /// the directory's lock, and makes what a previous process left in
    /// flight deliverable again: its deliveries ended with it. Delivered
    /// entries are remembered for `dedup_ttl`.
    pub fn open(dir: &Path, dedup_ttl: Duration) -> Result<(Self, Recovered), DurableError> {
        let io = |source| DurableError::Io { path: dir.to_owned(), source };
        DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        let lock = OpenOptions::new().create(true).write(true).truncate(false).mode(0o600).open(dir.join(LOCK_FILE));
        let lock = lock.map_err(io)?;
        if lock.try_lock().is_err() {
            return Err(DurableError::InUse(dir.to_owned()));
        }
        let mut conn = connect(dir)?;
        let now = now_ms();
        let recovered = {
            let tx = conn.transaction()?;
            let in_flight = tx.execute("UPDATE messages SET leased = 0, visible_at = ?1 WHERE leased = 1", [now])?;
            tx.execute("DELETE FROM seen WHERE owner IS NOT NULL", [])?;
            let count = |table: &str| -> rusqlite::Result<u64> {
                tx.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get::<_, i64>(0))
                    .map(|n| n.unsigned_abs())
            };
            let recovered = Recovered {
                waiting: count("messages")?,
                in_flight: in_flight as u64,
                dead_letters: count("dead_letters")?,
            };
            tx.commit()?;
            recovered
        };
        let (jobs, receiver) = mpsc::channel(PENDING_MAX);
        std::thread::Builder::new()
            .name("queue-writer".into())
            .spawn(move || write_loop(conn, receiver, lock))
            .map_err(io)?;
        Ok((Self { jobs, arrived: Arc::new(Notify::new()), dedup_ttl }, recovered))
    }

    /// Runs `operation` in the next group's transaction; resolves once that
    /// transaction is committed (or failed).
    async fn run<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&Transaction<'_>, i64) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, DurableError> {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |tx, now| {
            let result = operation(tx, now);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |committed| {
                let result = committed.map_err(DurableError::Sqlite).and(result.map_err(DurableError::from));
                let _ = answer.send(result);
            });
            (ok, reply)
        });
        self.jobs.send(job).await.map_err(|_| DurableError::Stopped)?;
        answered.await.map_err(|_| DurableError::Stopped)?
    }

    /// Adds a message; resolves once it is on disk.
    pub async fn enqueue(&self, message: QueueMessage) -> Result<(), DurableError> {
        let attributes = encode_attributes(&message.attributes);
        self.run(move |tx, now| {
            tx.prepare_cached("INSERT INTO messages (body, attributes, visible_at) VALUES (?1, ?2, ?3)")?
                .execute(params![message.body, attributes, now])
        })
        .await?;
        self.arrived.notify_one();
        Ok(())
    }

    /// Takes up to `max` visible messages, hiding them for the visibility
    /// timeout and counting the receive. A message already received
    /// [`MAX_RECEIVES`] times is dead-lettered instead, without a reason.
    async fn receive(&self, max: usize) -> Result<Vec<Received>, DurableError> {
        self.run(move |tx, now| {
            let mut select = tx.prepare_cached(
                "SELECT id, body, attributes, receives FROM messages WHERE visible_at <= ?1 \
                 ORDER BY visible_at, id LIMIT ?2",
            )?;
            let rows = select
                .query_map(params![now, max as i64], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get(1)?, row.get::<_, String>(2)?, row.get::<_, u32>(3)?))
                })?
                .collect::<rusqlite::Result<Vec<(i64, String, String, u32)>>>()?;
            let mut received = Vec::with_capacity(rows.len());
            for (id, body, attributes, receives) in rows {
                let message = QueueMessage { body, attributes: decode_attributes(&attributes) };
                if receives >= MAX_RECEIVES {
                    dead_letter(tx, id, &message, None, receives, now)?;
                    continue;
                }
                tx.prepare_cached(
                    "UPDATE messages SET receives = receives + 1, leased = 1, visible_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, now + millis(VISIBILITY_TIMEOUT)])?;
                received.push(Received { id, message });
            }
            Ok(received)
        })
        .await
    }

    /// Deletes the delivered messages; puts the failed ones back for a later
    /// receive, or in the dead letters if that was their last receive.
    /// Returns those dead-lettered: (webhook id, receives, reason).
    async fn settle(
        &self,
        delivered: Vec<i64>,
        failed: Vec<(i64, String)>,
    ) -> Result<Vec<(String, u32, String)>, DurableError> {
        self.run(move |tx, now| {
            for id in delivered {
                tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?.execute([id])?;
            }
            let mut dead = Vec::new();
            for (id, reason) in failed {
                let row = tx
                    .prepare_cached("SELECT body, attributes, receives FROM messages WHERE id = ?1")?
                    .query_row([id], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get(2)?)))
                    .optional()?;
                let Some((body, attributes, receives)) = row else { continue };
                if receives >= MAX_RECEIVES {
                    let message = QueueMessage { body, attributes: decode_attributes(&attributes) };
                    dead_letter(tx, id, &message, Some(&reason), receives, now)?;
                    dead.push((message.attribute(ATTR_ID).unwrap_or("-").to_owned(), receives, reason));
                    continue;
                }
                let visible_at = now + millis(RETRY_DELAY) * i64::from(receives);
                tx.prepare_cached("UPDATE messages SET leased = 0, visible_at = ?2 WHERE id = ?1")?
                    .execute(params![id, visible_at])?;
            }
            Ok(dead)
        })
        .await
    }

    /// Writes to the store and commits: whether it can accept webhooks now.
    pub async fn check_writable(&self) -> Result<(), DurableError> {
        self.run(|tx, now| {
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('checked_at', ?1)")?.execute([now])
        })
        .await
        .map(drop)
    }

    /// Forgets expired dedup entries and gives the pages of delivered rows
    /// back to the file system, so the file stops growing once deliveries
    /// and their dedup entries have expired. Returns the entries removed.
    pub async fn clean_up(&self) -> Result<usize, DurableError> {
        self.run(|tx, now| {
            let removed = tx.execute("DELETE FROM seen WHERE until <= ?1", [now])?;
            tx.execute_batch("PRAGMA incremental_vacuum")?;
            Ok(removed)
        })
        .await
    }

    /// Waits for a message to arrive, the idle poll's end, or the stop.
    async fn wait_for_messages(&self, stopping: &mut watch::Receiver<bool>) {
        tokio::select! {
            _ = tokio::time::timeout(IDLE_POLL, self.arrived.notified()) => {}
            _ = stopping.wait_for(|stop| *stop) => {}
        }
    }
}

/// Opens the database in `dir` (its file private to its owner) with the
/// settings that make a commit durable, and creates the tables.
fn connect(dir: &Path) -> Result<Connection, DurableError> {
    let path = dir.join(DB_FILE);
    // SQLite gives the write-ahead log the database file's permissions.
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| DurableError::Io { path: path.clone(), source })?;
    let conn = Connection::open(&path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Must precede the first table to apply.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: each commit's write-ahead log is fsynced before COMMIT returns,
    // so a 202 survives a power cut, not only a crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    // The log is reset at each checkpoint; this bounds what it keeps on disk.
    conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS messages (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             body TEXT NOT NULL,
             attributes TEXT NOT NULL,
             receives INTEGER NOT NULL DEFAULT 0,
             leased INTEGER NOT NULL DEFAULT 0,
             visible_at INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (visible_at, id);
         CREATE TABLE IF NOT EXISTS dead_letters (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             body TEXT NOT NULL,
             attributes TEXT NOT NULL,
             dead_at INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS seen (
             key TEXT PRIMARY KEY,
             owner TEXT,
             until INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;",
    )?;
    Ok(conn)
}

/// The writer: takes every job waiting (up to [`GROUP_MAX`]) into one
/// transaction, commits, then answers each. A job that failed is rolled
/// back alone (a savepoint each). Holds the directory's `lock` until the
/// last [`DurableStore`] is dropped.
fn write_loop(mut conn: Connection, mut jobs: mpsc::Receiver<Job>, lock: File) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let now = now_ms();
        let tx = match conn.transaction() {
            Ok(tx) => tx,
            Err(err) => {
                group.into_iter().for_each(|job| drop(job));
                error!(error = %err, "local queue store: cannot start a transaction");
                continue;
            }
        };
        let mut replies = Vec::with_capacity(group.len());
        for job in group {
            let saved = tx.execute_batch("SAVEPOINT job");
            let (ok, reply) = job(&tx, now);
            let undone =
                if ok { tx.execute_batch("RELEASE job") } else { tx.execute_batch("ROLLBACK TO job; RELEASE job") };
            if let Err(err) = saved.and(undone) {
                error!(error = %err, "local queue store: savepoint failed");
            }
            replies.push(reply);
        }
        let committed = tx.commit().map_err(|err| err.to_string());
        if let Err(err) = &committed {
            error!(error = %err, "local queue store: commit failed; the operations are answered with an error");
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
    // Closed (its log checkpointed) before another process may open it.
    drop(conn);
    drop(lock);
}

/// Moves a message to the dead letters with, if it failed, the reason and
/// the receives it took (the attributes the router Lambda adds).
fn dead_letter(
    tx: &Transaction<'_>,
    id: i64,
    message: &QueueMessage,
    reason: Option<&str>,
    receives: u32,
    now: i64,
) -> rusqlite::Result<()> {
    let mut attributes = message.attributes.clone();
    if let Some(reason) = reason {
        attributes.retain(|(name, _)| *name != ATTR_FAILURE_REASON && *name != ATTR_FAILED_RECEIVES);
        attributes.push((ATTR_FAILURE_REASON, truncate(reason, 1024)));
        attributes.push((ATTR_FAILED_RECEIVES, receives.to_string()));
    }
    tx.prepare_cached("INSERT INTO dead_letters (body, attributes, dead_at) VALUES (?1, ?2, ?3)")?.execute(params![
        message.body,
        encode_attributes(&attributes),
        now
    ])?;
    tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?.execute([id])?;
    if reason.is_none() {
        error!(
            outcome = Outcome::DeadLettered.as_str(),
            webhook_id = message.attribute(ATTR_ID).unwrap_or("-"),
            receives,
            "webhook dead-lettered: received too often without being settled"
        );
    }
    Ok(())
}

/// Moves every dead letter of the store in `dir` back to its queue, without
/// the failure's attributes and with its receives counted afresh; safe while
/// `serve` runs on it. Returns how many were moved.
pub fn redrive(dir: &Path) -> Result<usize, DurableError> {
    if !dir.join(DB_FILE).exists() {
        return Err(DurableError::Io {
            path: dir.join(DB_FILE),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no local queue store here"),
        });
    }
    let mut conn = connect(dir)?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let rows = tx
        .prepare("SELECT id, body, attributes FROM dead_letters ORDER BY id")?
        .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let now = now_ms();
    for (id, body, attributes) in &rows {
        let mut attributes = decode_attributes(attributes);
        attributes.retain(|(name, _)| *name != ATTR_FAILURE_REASON && *name != ATTR_FAILED_RECEIVES);
        tx.execute(
            "INSERT INTO messages (body, attributes, visible_at) VALUES (?1, ?2, ?3)",
            params![body, encode_attributes(&attributes), now],
        )?;
        tx.execute("DELETE FROM dead_letters WHERE id = ?1", [id])?;
    }
    tx.commit()?;
    Ok(rows.len())
}

impl Queue for DurableStore {
    async fn enqueue(&self, message: QueueMessage, _: Webhook<'_>) -> Result<(), QueueError> {
        DurableStore::enqueue(self, message).await.map_err(|err| QueueError(err.to_string()))
    }
}

/// Dedup entries in the same file: a claim is a row with its owner, a
/// completed delivery a row without one; each expires at `until`.
impl SeenStore for DurableStore {
    fn remembers(&self) -> Duration {
        self.dedup_ttl
    }

    async fn claim(&self, key: &str) -> Result<Claim, dedup::StoreError> {
        let (key, lease) = (key.to_owned(), Lease::new()?);
        let until = millis(dedup::DEFAULT_LEASE);
        let claim = self.run(move |tx, now| {
            let existing: Option<Option<String>> = tx
                .prepare_cached("SELECT owner FROM seen WHERE key = ?1 AND until > ?2")?
                .query_row(params![key, now], |row| row.get(0))
                .optional()?;
            Ok(match existing {
                Some(None) => Claim::AlreadyDelivered,
                Some(Some(_)) => Claim::InProgress,
                None => {
                    tx.prepare_cached("INSERT OR REPLACE INTO seen (key, owner, until) VALUES (?1, ?2, ?3)")?
                        .execute(params![key, lease.owner(), now + until])?;
                    Claim::Acquired(lease)
                }
            })
        });
        claim.await.map_err(unavailable)
    }

    async fn complete(&self, key: &str, lease: &Lease) -> Result<(), dedup::StoreError> {
        let (key, owner, ttl) = (key.to_owned(), lease.owner().to_owned(), millis(self.dedup_ttl));
        let lost = self.run(move |tx, now| {
            let current: Option<Option<String>> = tx
                .prepare_cached("SELECT owner FROM seen WHERE key = ?1")?
                .query_row([&key], |row| row.get(0))
                .optional()?;
            if matches!(&current, Some(other) if other.as_deref() != Some(owner.as_str())) {
                return Ok(Some(key));
            }
            tx.prepare_cached("INSERT OR REPLACE INTO seen (key, owner, until) VALUES (?1, NULL, ?2)")?
                .execute(params![key, now + ttl])?;
            Ok(None)
        });
        match lost.await.map_err(unavailable)? {
            Some(key) => Err(dedup::StoreError::LeaseLost(key)),
            None => Ok(()),
        }
    }

    async fn release(&self, key: &str, lease: &Lease) -> Result<(), dedup::StoreError> {
        let (key, owner) = (key.to_owned(), lease.owner().to_owned());
        self.run(move |tx, _| {
            tx.prepare_cached("DELETE FROM seen WHERE key = ?1 AND owner = ?2")?.execute(params![key, owner])
        })
        .await
        .map(drop)
        .map_err(unavailable)
    }
}

fn unavailable(err: DurableError) -> dedup::StoreError {
    dedup::StoreError::Unavailable(err.to_string())
}

/// Routes the store's messages until `stopping` turns true, then finishes
/// the batches in hand and returns: [`WORKERS`] receive loops, each routing
/// up to [`BATCH`] messages at a time, fetching claim-checked payloads from
/// `payload_store` as the router Lambda does.
pub async fn work<D: Deliver, S: SeenStore>(
    store: DurableStore,
    router: Arc<Router<D, S>>,
    payload_store: Arc<dyn PayloadStore>,
    stopping: watch::Receiver<bool>,
) {
    let loops = (0..WORKERS).map(|_| work_loop(&store, &router, payload_store.as_ref(), stopping.clone()));
    let cleanup = async {
        let mut stopping = stopping.clone();
        loop {
            if tokio::time::timeout(CLEANUP_EVERY, stopping.wait_for(|stop| *stop)).await.is_ok() {
                return;
            }
            if let Err(err) = store.clean_up().await {
                warn!(error = %err, "local queue store: clean-up failed");
            }
        }
    };
    futures_util::future::join(futures_util::future::join_all(loops), cleanup).await;
    info!("local queue worker stopped");
}

async fn work_loop<D: Deliver, S: SeenStore>(
    store: &DurableStore,
    router: &Router<D, S>,
    payload_store: &dyn PayloadStore,
    mut stopping: watch::Receiver<bool>,
) {
    while !*stopping.borrow() {
        let received = match store.receive(BATCH).await {
            Ok(received) => received,
            Err(err) => {
                error!(error = %err, "receiving from the local queue failed");
                store.wait_for_messages(&mut stopping).await;
                continue;
            }
        };
        if received.is_empty() {
            store.wait_for_messages(&mut stopping).await;
            continue;
        }
        let records = futures_util::future::join_all(received.iter().map(|r| async {
            let message =
                payloads::read_envelope(Some(payload_store), &r.message.body, |name| r.message.attribute(name)).await;
            let received = received_at(|name| r.message.attribute(name));
            Record { id: r.id.to_string(), message, claim_check: None, received }
        }))
        .await;
        let failures = router.route_batch(records).await;
        let failed: Vec<(i64, String)> =
            failures.into_iter().filter_map(|f| Some((f.id.parse().ok()?, f.reason))).collect();
        let delivered = received.iter().map(|r| r.id).filter(|id| !failed.iter().any(|(f, _)| f == id)).collect();
        match store.settle(delivered, failed).await {
            Ok(dead) => {
                for (webhook_id, receives, reason) in dead {
                    error!(
                        outcome = Outcome::DeadLettered.as_str(),
                        webhook_id, receives, reason, "webhook dead-lettered after too many failed deliveries"
                    );
                }
            }
            Err(err) => {
                warn!(error = %err, "settling a batch failed; its messages come back after the visibility timeout")
            }
        }
    }
}

fn encode_attributes(attributes: &[(&'static str, String)]) -> String {
    serde_json::to_string(attributes).expect("strings serialise")
}

/// Attributes as stored; any this version does not know are dropped.
fn decode_attributes(text: &str) -> Vec<(&'static str, String)> {
    let pairs: Vec<(String, String)> = serde_json::from_str(text).unwrap_or_default();
    pairs.into_iter().filter_map(|(name, value)| Some((known_attribute(&name)?, value))).collect()
}

fn truncate(text: &str, max: usize) -> String {
    let end = (0..=max.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    text[..end].to_owned()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::envelope::Envelope;

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        std::env::temp_dir().join(format!("durable-{name}-{}-{nanos}", std::process::id()))
    }

    fn message(id: &str) -> QueueMessage {
        Envelope { source: "nectar".into(), id: id.into(), timestamp: 1, body: "{}".into() }.to_queue_message()
    }

    /// Ends every message's wait, as if its visibility timeout or retry
    /// delay had passed.
    fn make_visible(dir: &Path) {
        connect(dir).unwrap().execute("UPDATE messages SET visible_at = 0", []).unwrap();
    }

    fn dead_letters(dir: &Path) -> Vec<QueueMessage> {
        let conn = connect(dir).unwrap();
        let mut select = conn.prepare("SELECT body, attributes FROM dead_letters ORDER BY id").unwrap();
        let rows = select.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))).unwrap();
        rows.map(|row| row.unwrap())
            .map(|(body, attributes)| QueueMessage { body, attributes: decode_attributes(&attributes) })
            .collect()
    }

    #[tokio::test]
    async fn a_message_failing_its_last_receive_is_dead_lettered_with_its_reason_then_redriven() {
        let dir = temp_dir("dead");
        let (store, _) = DurableStore::open(&dir, dedup::DEFAULT_TTL).unwrap();
        store.enqueue(message("msg_1")).await.unwrap();
        for receive in 1..=MAX_RECEIVES {
            make_visible(&dir);
            let received = store.receive(BATCH).await.unwrap();
            assert_eq!(received.len(), 1, "receive {receive}");
            assert!(store.receive(BATCH).await.unwrap().is_empty(), "hidden while being delivered");
            let dead = store.settle(vec![], vec![(received[0].id, format!("failure {receive}"))]).await.unwrap();
            assert_eq!(dead.len(), usize::from(receive == MAX_RECEIVES));
        }
        make_visible(&dir);
        assert!(store.receive(BATCH).await.unwrap().is_empty());
        let dead = dead_letters(&dir);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attribute(ATTR_ID), Some("msg_1"));
        assert_eq!(dead[0].attribute(ATTR_FAILURE_REASON), Some("failure 5"));
        assert_eq!(dead[0].attribute(ATTR_FAILED_RECEIVES), Some("5"));

        assert_eq!(redrive(&dir).unwrap(), 1);
        assert!(dead_letters(&dir).is_empty());
        let received = store.receive(BATCH).await.unwrap();
        assert_eq!(received.len(), 1, "back in the queue, its receives counted afresh");
        assert_eq!(received[0].message, message("msg_1"), "without the failure's attributes");
        store.settle(vec![received[0].id], vec![]).await.unwrap();
        make_visible(&dir);
        assert!(store.receive(BATCH).await.unwrap().is_empty(), "delivered: deleted");
    }

    #[tokio::test]
    async fn a_message_received_too_often_without_an_answer_is_dead_lettered_without_a_reason() {
        let dir = temp_dir("unsettled");
        let (store, _) = DurableStore::open(&dir, dedup::DEFAULT_TTL).unwrap();
        store.enqueue(message("msg_crashes")).await.unwrap();
        for _ in 0..MAX_RECEIVES {
            make_visible(&dir);
            assert_eq!(store.receive(BATCH).await.unwrap().len(), 1);
        }
        make_visible(&dir);
        assert!(store.receive(BATCH).await.unwrap().is_empty());
        let dead = dead_letters(&dir);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attribute(ATTR_FAILURE_REASON), None);
    }

    #[tokio::test]
    async fn a_restart_takes_back_the_deliveries_and_claims_left_in_flight() {
        let dir = temp_dir("restart");
        let (store, _) = DurableStore::open(&dir, dedup::DEFAULT_TTL).unwrap();
        assert!(matches!(DurableStore::open(&dir, dedup::DEFAULT_TTL), Err(DurableError::InUse(_))));
        store.enqueue(message("msg_1")).await.unwrap();
        store.enqueue(message("msg_2")).await.unwrap();
        assert_eq!(store.receive(1).await.unwrap().len(), 1);
        assert!(matches!(store.claim("msg_1/file").await.unwrap(), Claim::Acquired(_)));
        drop(store);
        let (store, recovered) = loop {
            match DurableStore::open(&dir, dedup::DEFAULT_TTL) {
                Err(DurableError::InUse(_)) => tokio::task::yield_now().await,
                opened => break opened.unwrap(),
            }
        };
        assert_eq!(recovered, Recovered { waiting: 2, in_flight: 1, dead_letters: 0 });
        assert_eq!(store.receive(BATCH).await.unwrap().len(), 2);
        assert!(matches!(store.claim("msg_1/file").await.unwrap(), Claim::Acquired(_)));
    }

    #[tokio::test]
    async fn claims_have_owners_and_deliveries_are_remembered_until_they_expire() {
        let dir = temp_dir("seen");
        let (store, _) = DurableStore::open(&dir, dedup::DEFAULT_TTL).unwrap();
        let Claim::Acquired(stale) = store.claim("a").await.unwrap() else { panic!() };
        assert_eq!(store.claim("a").await.unwrap(), Claim::InProgress);
        store.release("a", &stale).await.unwrap();
        let Claim::Acquired(live) = store.claim("a").await.unwrap() else { panic!() };
        store.release("a", &stale).await.unwrap();
        assert_eq!(store.claim("a").await.unwrap(), Claim::InProgress, "a stale lease cannot end a live claim");
        assert!(matches!(store.complete("a", &stale).await, Err(dedup::StoreError::LeaseLost(key)) if key == "a"));
        store.complete("a", &live).await.unwrap();
        assert_eq!(store.claim("a").await.unwrap(), Claim::AlreadyDelivered);

        connect(&dir).unwrap().execute("UPDATE seen SET until = 0", []).unwrap();
        assert_eq!(store.clean_up().await.unwrap(), 1, "expired entries are forgotten");
        assert!(matches!(store.claim("a").await.unwrap(), Claim::Acquired(_)));
    }
}
