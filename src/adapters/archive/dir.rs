//! Local mode's archive (`serve --archive-dir DIR`, `ARCHIVE_DIR`): the same
//! lines as the deployed archive, in the same partitions, as files under a
//! directory: `DIR/dt=YYYY-MM-DD/hour=HH/archive-{pid}-{start}.jsonl`, one
//! file per process and hour, appended to and synced before a batch counts
//! as archived. Uncompressed, so a partly written hour can be read (the
//! reader takes gzip and plain alike).
//!
//! Webhook payloads are business data: directories are created readable by
//! their owner only (0700) and files likewise (0600), as the payload
//! directory's are.

use crate::core::archive::{Archive, ArchiveError, ArchiveFuture, partition_path};
use chrono::{DateTime, Timelike as _, Utc};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// An archive directory, written by this process.
#[derive(Debug, Clone)]
pub struct ArchiveDir {
    root: PathBuf,
    /// The file of the current hour, opened on the first append in it.
    current: Arc<Mutex<Option<HourFile>>>,
    /// Names this process's files apart from another's in the same hour.
    file_name: String,
}

impl ArchiveDir {
    /// Creates the directory if needed; fails if it cannot be written.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        DirBuilder::new().recursive(true).mode(0o700).create(root)?;
        let probe = tempfile_in(root)?;
        std::fs::remove_file(probe)?;
        let started = DateTime::<Utc>::from(std::time::SystemTime::now()).timestamp_millis();
        Ok(Self {
            root: root.to_owned(),
            current: Arc::default(),
            file_name: format!("archive-{}-{started}.jsonl", std::process::id()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    fn write(&self, lines: &[Vec<u8>]) -> std::io::Result<()> {
        let now = DateTime::<Utc>::from(std::time::SystemTime::now());
        let hour = now.with_minute(0).and_then(|t| t.with_second(0)).and_then(|t| t.with_nanosecond(0)).unwrap_or(now);
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_none_or(|(open, _)| *open != hour) {
            let dir = self.root.join(partition_path(hour));
            DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
            let file = OpenOptions::new().create(true).append(true).mode(0o600).open(dir.join(&self.file_name))?;
            *current = Some((hour, file));
        }
        let (_, file) = current.as_mut().expect("opened above");
        file.write_all(&lines.concat())?;
        file.sync_data()
    }
}

/// The file this process appends to in one hour's partition.
type HourFile = (DateTime<Utc>, File);

/// A file the directory's owner could write, to check it can at start.
fn tempfile_in(root: &Path) -> std::io::Result<PathBuf> {
    let path = root.join(format!(".write-check-{}", std::process::id()));
    OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&path)?;
    Ok(path)
}

impl Archive for ArchiveDir {
    fn max_line_bytes(&self) -> Option<usize> {
        None
    }

    fn append<'a>(&'a self, lines: &'a [Vec<u8>]) -> ArchiveFuture<'a, Vec<Result<(), ArchiveError>>> {
        Box::pin(async move {
            let this = self.clone();
            let owned = lines.to_vec();
            let written = tokio::task::spawn_blocking(move || this.write(&owned))
                .await
                .unwrap_or_else(|err| Err(std::io::Error::other(err)));
            match written {
                Ok(()) => lines.iter().map(|_| Ok(())).collect(),
                Err(err) => {
                    let cause = format!("writing {}: {err}", self.root.display());
                    lines.iter().map(|_| Err(ArchiveError::Unavailable(cause.clone()))).collect()
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::archive::partition_hour;

    #[tokio::test]
    async fn lines_land_in_the_current_hours_partition_readable_by_the_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = std::env::temp_dir().join(format!("archive-dir-test-{}", std::process::id()));
        let archive = ArchiveDir::open(&root).unwrap();
        let results = archive.append(&[b"{\"a\":1}\n".to_vec(), b"{\"b\":2}\n".to_vec()]).await;
        assert!(results.iter().all(Result::is_ok));
        let files: Vec<PathBuf> = walk(&root);
        assert_eq!(files.len(), 1, "{files:?}");
        let hour = partition_hour(files[0].to_str().unwrap()).unwrap();
        assert!(DateTime::<Utc>::from(std::time::SystemTime::now()) - hour < chrono::Duration::hours(1));
        assert_eq!(std::fs::read(&files[0]).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&root).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::remove_dir_all(&root).unwrap();
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
        }
        files
    }
}
