//! File provider (`--config PATH`): the objects come from a YAML file, reloaded when it changes.
//!
//! The file is checked every `poll` interval (its size, modification time and inode, following
//! symlinks, so the atomic symlink swap of a mounted ConfigMap volume is seen too). A changed
//! file is read only once it has **settled**: seen the same at two checks in a row, one poll
//! apart ([`Settle`]), so a file being written in place is not applied half-written. It is
//! read by [`ConfigFile`] (regular files only, at most `--config-max-bytes`). A file that is
//! refused, cannot be read or does not parse is logged once, counted, and the last good table
//! stays in force; when it is good again, that is logged too. A nudge on
//! [`FileProvider::reload_handle`] (SIGHUP) reads and applies it at once, settled or not,
//! changed or not.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use super::config_file::FileError;
use super::config_file::{ConfigFile, Fingerprint, Loaded};
use crate::control::publisher::TablePublisher;

/// At start, how many times a file that keeps changing while it is read is read again.
const START_ATTEMPTS: usize = 20;

/// What the watcher should do after one look at the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The file is as last handled: nothing to do.
    Unchanged,
    /// The file changed since the last look: wait one more poll before reading it.
    Settling,
    /// The file has been the same for one poll interval: read it now.
    Read,
}

/// The settle rule, without I/O or clock: a version of the file (or its absence) is handled
/// once it has been seen at two looks in a row, and only once.
#[derive(Debug, Clone, Default)]
pub struct Settle {
    handled: Option<Option<Fingerprint>>,
    pending: Option<Option<Fingerprint>>,
}

impl Settle {
    /// A rule that takes `handled` as already dealt with (the version read at start).
    pub fn after(handled: Option<Fingerprint>) -> Self {
        Self {
            handled: Some(handled),
            pending: None,
        }
    }

    /// One look at the file: its fingerprint now, `None` when it cannot be stat'ed.
    pub fn observe(&mut self, now: Option<Fingerprint>) -> Step {
        if self.handled.as_ref() == Some(&now) {
            self.pending = None;
            return Step::Unchanged;
        }
        if self.pending.as_ref() != Some(&now) {
            self.pending = Some(now);
            return Step::Settling;
        }
        self.pending = None;
        self.handled = Some(now);
        Step::Read
    }

    /// The read found the file changing: forget it, so it settles again before the next read.
    pub fn unsettled(&mut self) {
        self.handled = None;
        self.pending = None;
    }
}

/// Watches one file and feeds its objects to a [`TablePublisher`].
#[derive(Debug, Clone)]
pub struct FileProvider {
    file: ConfigFile,
    poll: Duration,
    /// What the last good read saw: the file's version and its text.
    seen: Option<(Fingerprint, String)>,
    /// Notified to reload now (SIGHUP).
    reload: Arc<Notify>,
}

impl FileProvider {
    /// A provider for `path`, checking it every `poll`, reading at most `max_bytes`.
    pub fn new(path: impl Into<std::path::PathBuf>, poll: Duration, max_bytes: u64) -> Self {
        Self {
            file: ConfigFile::new(path, max_bytes),
            poll,
            seen: None,
            reload: Arc::new(Notify::new()),
        }
    }

    /// Notify it to read and apply the file now, even if it looks unchanged or unsettled (a
    /// notification sent before [`FileProvider::watch`] runs is kept for it).
    pub fn reload_handle(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    /// Reads and applies the file once. Used at start, where a bad file is a fatal error; a
    /// file that changes while it is read is read again (after one poll interval, a bounded
    /// number of times).
    pub async fn load(&mut self, publisher: &TablePublisher) -> Result<(), FileError> {
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            match self.read_and_apply(publisher).await {
                Err(FileError::Changed { .. }) if attempts < START_ATTEMPTS => {
                    tokio::time::sleep(self.poll).await;
                }
                other => break other,
            }
        };
        publisher.record_load(result.is_ok());
        result
    }

    /// Read in place, not on a blocking thread: at start nothing is served yet, and a blocking
    /// thread would outlive the load by tokio's keep-alive (a thread more than `--worker-threads`).
    async fn read_and_apply(&mut self, publisher: &TablePublisher) -> Result<(), FileError> {
        let loaded = self.file.read()?;
        let manifest = self.file.parse(&loaded.text)?;
        if !manifest.skipped.is_empty() {
            tracing::debug!(skipped = ?manifest.skipped, "objects of kinds dermaga does not use were skipped");
        }
        let objects = manifest.objects;
        publisher.update(|index| index.reset_all(objects));
        let Loaded { fingerprint, text } = loaded;
        self.seen = Some((fingerprint, text));
        Ok(())
    }

    /// Reloads the file whenever it changes and has settled, until `shutdown`.
    pub async fn watch(mut self, publisher: Arc<TablePublisher>, shutdown: CancellationToken) {
        let path = self.file.path().display().to_string();
        let mut settle = Settle::after(self.seen.as_ref().map(|(f, _)| f.clone()));
        // Whether the last attempt failed: the next good one says so.
        let mut failing = false;
        let mut interval = tokio::time::interval(self.poll);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => false,
                _ = self.reload.notified() => true,
            };
            // A requested reload (SIGHUP) reads now: the operator says the file is ready.
            let step = if forced {
                settle = Settle::after(self.file.fingerprint());
                Step::Read
            } else {
                settle.observe(self.file.fingerprint())
            };
            match step {
                Step::Unchanged => continue,
                Step::Settling => {
                    tracing::debug!(config = %path, "config file changed; waiting one poll for it to settle");
                    continue;
                }
                Step::Read => {}
            }
            let file = self.file.clone();
            let read = tokio::task::spawn_blocking(move || file.read())
                .await
                .expect("reading the config file does not panic");
            let loaded = match read {
                Ok(loaded) => loaded,
                Err(FileError::Changed { .. }) => {
                    tracing::debug!(config = %path, "config file changed while read; waiting for it to settle");
                    settle.unsettled();
                    continue;
                }
                Err(err) => {
                    tracing::error!(error = %err, "config reload failed; keeping the last good configuration");
                    publisher.record_load(false);
                    failing = true;
                    continue;
                }
            };
            let same_text = self.seen.as_ref().map(|(_, t)| t) == Some(&loaded.text);
            if same_text && !failing && !forced {
                // Only the file's attributes changed.
                self.seen = Some((loaded.fingerprint, loaded.text));
                continue;
            }
            let parsed = if same_text && !forced {
                Ok(None)
            } else {
                let file = self.file.clone();
                let text = loaded.text.clone();
                tokio::task::spawn_blocking(move || file.parse(&text).map(Some))
                    .await
                    .expect("parsing the config file does not panic")
            };
            match parsed {
                Ok(manifest) => {
                    if let Some(manifest) = manifest {
                        let objects = manifest.objects;
                        publisher.update(|index| index.reset_all(objects));
                    }
                    publisher.record_load(true);
                    if failing {
                        tracing::info!(config = %path, "--config {path} is valid again; applied");
                    } else {
                        tracing::info!(path = %path, requested = forced, "config reloaded");
                    }
                    failing = false;
                    self.seen = Some((loaded.fingerprint, loaded.text));
                }
                Err(err) => {
                    tracing::error!(error = %err, "config reload failed; keeping the last good configuration");
                    publisher.record_load(false);
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(dir: &std::path::Path, text: &str) -> Option<Fingerprint> {
        let path = dir.join("f.yaml");
        std::fs::write(&path, text).unwrap();
        ConfigFile::new(&path, 1024).fingerprint()
    }

    #[test]
    fn a_version_is_read_after_two_looks_in_a_row_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = version(dir.path(), "a");
        let v2 = version(dir.path(), "ab");
        let v3 = version(dir.path(), "abc");
        let mut settle = Settle::after(v1.clone());
        assert_eq!(settle.observe(v1.clone()), Step::Unchanged);
        // Written in two halves, one poll apart: neither half is read.
        assert_eq!(settle.observe(v2.clone()), Step::Settling);
        assert_eq!(settle.observe(v3.clone()), Step::Settling);
        assert_eq!(settle.observe(v3.clone()), Step::Read);
        assert_eq!(settle.observe(v3.clone()), Step::Unchanged);
        // Deleted: handled once (the read fails and is reported once), then back.
        assert_eq!(settle.observe(None), Step::Settling);
        assert_eq!(settle.observe(None), Step::Read);
        assert_eq!(settle.observe(None), Step::Unchanged);
        assert_eq!(settle.observe(v3.clone()), Step::Settling);
        assert_eq!(settle.observe(v3.clone()), Step::Read);
        // Back to what was handled before the change settled: nothing to do.
        assert_eq!(settle.observe(v1.clone()), Step::Settling);
        assert_eq!(settle.observe(v3.clone()), Step::Unchanged);
        // A read that saw the file change: it must settle again.
        settle.unsettled();
        assert_eq!(settle.observe(v3.clone()), Step::Settling);
        assert_eq!(settle.observe(v3), Step::Read);
    }
}
