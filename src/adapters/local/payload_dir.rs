//! Local mode's claim-check store: payloads too large for a queue message,
//! kept as files in a directory, so local mode takes the same path as the
//! Lambdas (store, queue a reference, fetch it back) without AWS.
//!
//! **Why a directory rather than memory.** With a real SQS queue
//! (`QUEUE_URL`) a pointer message outlives this process, and so must its
//! payload: a server restarted while messages wait must still resolve them.
//! One store for both queues keeps local mode a single code path.
//!
//! **Why files expire rather than being deleted after delivery.** A webhook's
//! payload is stored under one key per webhook id
//! ([`claim_check::key_for`](crate::core::claim_check::key_for)): a Svix retry
//! of the same webhook overwrites the same file, and copies routed to SQS
//! destinations point at it too. Deleting it after one delivery would strand
//! those, so, like the deployed bucket's lifecycle rule, files expire after a
//! time to live: each file's modification time is set to when it expires, and
//! expired files are removed when the store opens and then at most every
//! [`SWEEP_INTERVAL`]. A directory shared by several servers thereby honours
//! the time to live each file was written with.
//!
//! Webhook payloads are business data: the directory is created readable by
//! its owner only (0700) and each file likewise (0600). Only files this store
//! names (`*.payload`, and its partial writes) are ever removed, so a
//! directory that holds other files keeps them.

use crate::config::LOCAL_PAYLOAD_DIR;
use crate::core::claim_check::{ClaimCheckError, PayloadStore, StoreFuture};
use bytes::Bytes;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;
use tracing::{info, warn};

/// How often, at most, expired payloads are looked for (on a write).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10 * 60);

/// Every payload file ends with this, and only such files are ever removed.
const SUFFIX: &str = ".payload";

/// A file being written is named `{final name}~{pid}-{n}` and renamed when
/// complete, so a reader never sees half a payload. One left behind by a
/// crash is removed once it is this old.
const STALE_PARTIAL: Duration = Duration::from_secs(60 * 60);

/// The directory cannot serve as the store; start-up stops with this.
#[derive(Debug, Error)]
pub enum PayloadDirError {
    #[error("payload directory {}: {source} (set {LOCAL_PAYLOAD_DIR} to a directory you can write)", .path.display())]
    Unusable { path: PathBuf, source: io::Error },
    #[error("payload directory {}: the path is not valid UTF-8, so it cannot travel in a reference (set {LOCAL_PAYLOAD_DIR})", .0.display())]
    NotUtf8(PathBuf),
}

/// Payloads as files under one directory; references are
/// `file://{directory}/{key}.payload`, the path of the file, as is.
#[derive(Debug)]
pub struct PayloadDir {
    root: PathBuf,
    /// `file://{root}/`: what every reference to this store starts with.
    prefix: String,
    ttl: Duration,
    last_sweep: Mutex<Instant>,
}

impl PayloadDir {
    /// Creates the directory if needed, checks that files can be written in
    /// it, and removes expired payloads; payloads written from now on are
    /// kept for `ttl`.
    pub fn open(path: &Path, ttl: Duration) -> Result<Self, PayloadDirError> {
        let unusable = |source| PayloadDirError::Unusable { path: path.to_owned(), source };
        create_private_dir(path).map_err(unusable)?;
        // Canonical, so that processes started from other directories (or
        // through a symbolic link) write and read the same references.
        let root = fs::canonicalize(path).map_err(unusable)?;
        let text = root.to_str().ok_or_else(|| PayloadDirError::NotUtf8(root.clone()))?;
        let prefix = format!("file://{}/", text.trim_end_matches('/'));
        let probe = partial_name(&root.join(format!(".probe{SUFFIX}")));
        private_file(&probe).and_then(|_| fs::remove_file(&probe)).map_err(unusable)?;
        log_sweep(&root, sweep(&root, SystemTime::now()));
        Ok(Self { root, prefix, ttl, last_sweep: Mutex::new(Instant::now()) })
    }

    /// The directory, canonical.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The file a key is stored in; keys name files below the directory and
    /// nothing else: components of ASCII letters, digits, `-`, `_` and `.`,
    /// never `.` or `..`.
    fn file_for(&self, key: &str) -> Option<PathBuf> {
        let safe = |part: &str| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        key.split('/').all(safe).then(|| self.root.join(format!("{key}{SUFFIX}")))
    }

    /// Starts a sweep in the background if the last one is older than [`SWEEP_INTERVAL`].
    fn sweep_if_due(&self) {
        let mut last = self.last_sweep.lock().unwrap_or_else(PoisonError::into_inner);
        if last.elapsed() < SWEEP_INTERVAL {
            return;
        }
        *last = Instant::now();
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || log_sweep(&root, sweep(&root, SystemTime::now())));
    }
}

impl PayloadStore for PayloadDir {
    fn put<'a>(&'a self, key: &'a str, body: &'a [u8]) -> StoreFuture<'a, String> {
        Box::pin(async move {
            let path = self.file_for(key).ok_or_else(|| ClaimCheckError(format!("{key:?} is not a safe file name")))?;
            let reference = format!("file://{}", path.display());
            let (body, expires) = (body.to_vec(), SystemTime::now() + self.ttl);
            let written = tokio::task::spawn_blocking(move || write(&path, &body, expires)).await;
            written
                .unwrap_or_else(|panicked| Err(io::Error::other(panicked)))
                .map_err(|err| ClaimCheckError(format!("writing {reference}: {err}")))?;
            self.sweep_if_due();
            Ok(reference)
        })
    }

    fn get<'a>(&'a self, reference: &'a str) -> StoreFuture<'a, Bytes> {
        Box::pin(async move {
            let path = reference
                .strip_prefix(&self.prefix)
                .and_then(|rest| rest.strip_suffix(SUFFIX))
                .and_then(|key| self.file_for(key))
                .ok_or_else(|| ClaimCheckError(format!("{reference:?} is not a payload in {}", self.root.display())))?;
            let read = tokio::task::spawn_blocking(move || fs::read(path)).await;
            match read.unwrap_or_else(|panicked| Err(io::Error::other(panicked))) {
                Ok(body) => Ok(Bytes::from(body)),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    Err(ClaimCheckError(format!("{reference}: no such payload (expired, or never stored)")))
                }
                Err(err) => Err(ClaimCheckError(format!("reading {reference}: {err}"))),
            }
        })
    }
}

/// Writes `body` to `path` whole or not at all, expiring at `expires`.
fn write(path: &Path, body: &[u8], expires: SystemTime) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    let partial = partial_name(path);
    let written = private_file(&partial).and_then(|mut file| {
        file.write_all(body)?;
        file.set_modified(expires)?;
        file.sync_data()
    });
    let renamed = written.and_then(|()| fs::rename(&partial, path));
    if renamed.is_err() {
        let _ = fs::remove_file(&partial);
    }
    renamed
}

/// A name for `path` while it is written, unique within this machine.
fn partial_name(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!("~{}-{n}", std::process::id()));
    PathBuf::from(name)
}

/// Whether a file name is one [`partial_name`] made.
fn is_partial(name: &str) -> bool {
    name.rsplit_once('~').is_some_and(|(complete, _)| complete.ends_with(SUFFIX))
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

fn private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Removes, below `dir`, the payloads that expired by `now` and partial
/// writes abandoned for [`STALE_PARTIAL`]; returns how many it removed.
/// Symbolic links are not followed; files this store did not name are kept.
fn sweep(dir: &Path, now: SystemTime) -> io::Result<usize> {
    let mut removed = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            removed += sweep(&entry.path(), now)?;
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let grace = if name.ends_with(SUFFIX) {
            Duration::ZERO
        } else if is_partial(&name) {
            STALE_PARTIAL
        } else {
            continue;
        };
        if !kind.is_file() {
            continue;
        }
        // Another server sharing the directory may remove a file first.
        let gone = |err: &io::Error| err.kind() == io::ErrorKind::NotFound;
        let modified = match entry.metadata().and_then(|meta| meta.modified()) {
            Ok(modified) => modified,
            Err(err) if gone(&err) => continue,
            Err(err) => return Err(err),
        };
        if modified + grace > now {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(err) if gone(&err) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(removed)
}

fn log_sweep(root: &Path, outcome: io::Result<usize>) {
    match outcome {
        Ok(0) => {}
        Ok(removed) => info!(removed, directory = %root.display(), "expired payloads removed"),
        Err(err) => warn!(error = %err, directory = %root.display(), "could not remove expired payloads"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    fn scratch(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("payload-dir-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        path
    }

    #[tokio::test]
    async fn payloads_come_back_whole_from_a_private_directory() {
        let path = scratch("round-trip");
        let store = PayloadDir::open(&path.join("nested"), DAY).unwrap();
        let body: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
        let reference = store.put("payloads/nectar/msg_1", &body).await.unwrap();
        let file = store.path().join("payloads/nectar/msg_1.payload");
        assert_eq!(reference, format!("file://{}", file.display()));
        assert_eq!(store.get(&reference).await.unwrap(), body);
        // A retry of the same webhook overwrites rather than accumulates.
        assert_eq!(store.put("payloads/nectar/msg_1", b"again").await.unwrap(), reference);
        assert_eq!(store.get(&reference).await.unwrap(), &b"again"[..]);
        assert_eq!(fs::read_dir(file.parent().unwrap()).unwrap().count(), 1, "no partial file left");
        let expires = fs::metadata(&file).unwrap().modified().unwrap();
        assert!(expires > SystemTime::now() + DAY - Duration::from_secs(60), "the file's time is its expiry");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!((mode(store.path()), mode(file.parent().unwrap()), mode(&file)), (0o700, 0o700, 0o600));
        }
        fs::remove_dir_all(path).unwrap();
    }

    #[tokio::test]
    async fn keys_and_references_cannot_reach_outside_the_directory() {
        let path = scratch("escape");
        let store = PayloadDir::open(&path, DAY).unwrap();
        for key in ["payloads/../../x", "/etc/passwd", "payloads//x", "payloads/nectar/..", "a b", ""] {
            assert!(store.put(key, b"x").await.is_err(), "{key:?}");
        }
        let secret = path.join("secret.payload");
        fs::write(&secret, "not a payload").unwrap();
        let outside = std::env::temp_dir().join("other/payloads/nectar/msg.payload");
        for reference in [
            format!("file://{}", outside.display()),
            format!("file://{}/../secret.payload", store.path().join("payloads").display()),
            format!("s3://bucket/{}", store.path().join("secret.payload").display()),
            format!("file://{}", store.path().join("secret").display()),
        ] {
            let err = store.get(&reference).await.unwrap_err().to_string();
            assert!(err.contains("is not a payload in"), "{reference}: {err}");
        }
        let missing = format!("file://{}", store.path().join("payloads/nectar/gone.payload").display());
        let err = store.get(&missing).await.unwrap_err().to_string();
        assert!(err.ends_with("no such payload (expired, or never stored)"), "{err}");
        fs::remove_dir_all(path).unwrap();
    }

    #[tokio::test]
    async fn expired_payloads_and_abandoned_writes_are_swept_and_nothing_else() {
        let path = scratch("sweep");
        let store = PayloadDir::open(&path, Duration::ZERO).unwrap();
        let keep = PayloadDir::open(&path, DAY).unwrap();
        store.put("payloads/nectar/old", b"x").await.unwrap();
        keep.put("payloads/nectar/fresh", b"x").await.unwrap();
        let dir = store.path().join("payloads/nectar");
        File::create(dir.join("abandoned.payload~1-1")).unwrap().set_modified(SystemTime::now() - DAY).unwrap();
        File::create(dir.join("writing.payload~1-2")).unwrap();
        File::create(dir.join("notes.txt")).unwrap().set_modified(SystemTime::now() - DAY).unwrap();

        assert_eq!(sweep(store.path(), SystemTime::now() + Duration::from_secs(1)).unwrap(), 2);
        let mut left: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["fresh.payload", "notes.txt", "writing.payload~1-2"]);
        fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn an_unusable_directory_stops_start_up_naming_the_variable() {
        let path = scratch("not-a-dir");
        fs::write(&path, "a file").unwrap();
        let err = PayloadDir::open(&path, DAY).unwrap_err().to_string();
        assert!(err.starts_with(&format!("payload directory {}:", path.display())), "{err}");
        assert!(err.ends_with("(set LOCAL_PAYLOAD_DIR to a directory you can write)"), "{err}");
        fs::remove_file(path).unwrap();
    }
}
