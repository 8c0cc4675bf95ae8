//! File provider (`--config PATH`): the objects come from a YAML file, reloaded when it changes.
//!
//! The file is checked every `poll` interval (its size, modification time and inode, following
//! symlinks, so the atomic symlink swap of a mounted ConfigMap volume is seen too). A file that
//! cannot be read or parsed is logged and the last good table stays in force. A nudge on
//! [`FileProvider::reload_handle`] (SIGHUP) reads and applies it at once, changed or not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::manifest::{ManifestError, parse_manifest};
use crate::control::controller::Controller;

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file is not a valid manifest.
    #[error("{path}: {error}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: ManifestError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    })
}

/// Watches one file and feeds its objects to a [`Controller`].
#[derive(Debug, Clone)]
pub struct FileProvider {
    path: PathBuf,
    poll: Duration,
    /// What the last read saw: the file's fingerprint taken before reading, and the text.
    seen: (Option<Fingerprint>, Option<String>),
    /// Notified to reload now (SIGHUP).
    reload: Arc<Notify>,
}

impl FileProvider {
    /// A provider for `path`, checking it every `poll`.
    pub fn new(path: impl Into<PathBuf>, poll: Duration) -> Self {
        Self {
            path: path.into(),
            poll,
            seen: (None, None),
            reload: Arc::new(Notify::new()),
        }
    }

    /// Notify it to read and apply the file now, even if it looks unchanged (a notification
    /// sent before [`FileProvider::watch`] runs is kept for it).
    pub fn reload_handle(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    /// Reads and applies the file once. Used at start, where a bad file is a fatal error.
    pub fn load(&mut self, controller: &Controller) -> Result<(), FileError> {
        // Fingerprint first: a change made while we read is then seen by `watch`.
        let before = fingerprint(&self.path);
        let result = std::fs::read_to_string(&self.path)
            .map_err(|error| FileError::Read {
                path: self.path.clone(),
                error,
            })
            .and_then(|text| {
                self.apply(&text, controller)?;
                self.seen = (before, Some(text));
                Ok(())
            });
        controller.record_load(result.is_ok());
        result
    }

    fn apply(&self, text: &str, controller: &Controller) -> Result<(), FileError> {
        let manifest = parse_manifest(text).map_err(|error| FileError::Manifest {
            path: self.path.clone(),
            error,
        })?;
        if !manifest.skipped.is_empty() {
            tracing::debug!(skipped = ?manifest.skipped, "objects of kinds dermaga does not use were skipped");
        }
        let objects = manifest.objects;
        controller.update(|index| index.reset_all(objects));
        Ok(())
    }

    /// Reloads the file whenever it changes, until `shutdown`.
    pub async fn watch(self, controller: Arc<Controller>, shutdown: CancellationToken) {
        let (mut last, mut last_text) = self.seen.clone();
        let mut interval = tokio::time::interval(self.poll);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => false,
                _ = self.reload.notified() => true,
            };
            let now = fingerprint(&self.path);
            if now == last && !forced {
                continue;
            }
            last = now;
            let text = match tokio::fs::read_to_string(&self.path).await {
                Ok(text) => text,
                Err(error) => {
                    let err = FileError::Read {
                        path: self.path.clone(),
                        error,
                    };
                    tracing::error!(error = %err, "config reload failed; keeping the last good configuration");
                    controller.record_load(false);
                    continue;
                }
            };
            if last_text.as_deref() == Some(text.as_str()) && !forced {
                continue;
            }
            let result = self.apply(&text, &controller);
            controller.record_load(result.is_ok());
            match result {
                Ok(()) => {
                    tracing::info!(path = %self.path.display(), requested = forced, "config reloaded")
                }
                Err(err) => {
                    tracing::error!(error = %err, "config reload failed; keeping the last good configuration")
                }
            }
            last_text = Some(text);
        }
    }
}
