//! Reading a configuration file safely: the one loader of the `--config` provider and of
//! `dermaga check`.
//!
//! Invariants:
//! - only regular files are read (a symlink is followed, so a ConfigMap volume's `..data` link
//!   works); a FIFO, socket, device or directory is refused from its metadata, before it is
//!   opened, and again from the opened descriptor (opened with `O_NONBLOCK`, so even a FIFO
//!   swapped in between cannot block the open);
//! - a file larger than the limit is refused before reading, and the read itself is bounded
//!   (the file may grow between the check and the read): never more than `max_bytes + 1` bytes
//!   are held;
//! - a file that changed while it was read is reported as [`FileError::Changed`], never
//!   returned half-read.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::manifest::{Manifest, ManifestError, parse_manifest};

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read (missing, no permission, not UTF-8).
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Not a regular file (nor a symlink to one).
    #[error(
        "{path} is {what}, not a regular file; only a regular file (or a symlink to one) is read"
    )]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead: "a FIFO", "a character device", ...
        what: &'static str,
    },
    /// Larger than `--config-max-bytes`.
    #[error("{path} is {size}, more than --config-max-bytes {limit}; it was not read")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, as far as known ("17825792 bytes", or "more than 16777216 bytes" when it
        /// grew while read).
        size: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The file changed while it was read; it is read again once it has settled.
    #[error("{path} changed while it was read")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a valid manifest.
    #[error("{path}: {error}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// What is wrong (boxed: it is large, and rare).
        error: Box<ManifestError>,
    },
}

/// What identifies one version of a file without reading it: size, modification time, device
/// and inode (of the target, symlinks followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    dev: u64,
    inode: u64,
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            dev: meta.dev(),
            inode: meta.ino(),
        }
    }
}

/// A file read in whole, and the version it was read at.
#[derive(Debug)]
pub struct Loaded {
    /// The file's version while it was read (it did not change during the read).
    pub fingerprint: Fingerprint,
    /// Its text.
    pub text: String,
}

/// One configuration file and the size it may have.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    max_bytes: u64,
}

impl ConfigFile {
    /// `path`, read only when it is a regular file of at most `max_bytes`.
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            path: path.into(),
            max_bytes,
        }
    }

    /// The path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's current version, without opening it (`None`: it cannot be stat'ed, e.g. it
    /// does not exist).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        std::fs::metadata(&self.path)
            .ok()
            .map(|m| Fingerprint::of(&m))
    }

    fn read_error(&self, error: std::io::Error) -> FileError {
        FileError::Read {
            path: self.path.clone(),
            error,
        }
    }

    /// Refuses what is not a regular file of at most `max_bytes`.
    fn admit(&self, meta: &std::fs::Metadata) -> Result<(), FileError> {
        let kind = meta.file_type();
        let what = if kind.is_file() {
            None
        } else if kind.is_fifo() {
            Some("a FIFO")
        } else if kind.is_char_device() {
            Some("a character device")
        } else if kind.is_block_device() {
            Some("a block device")
        } else if kind.is_socket() {
            Some("a socket")
        } else if kind.is_dir() {
            Some("a directory")
        } else {
            Some("not a file")
        };
        if let Some(what) = what {
            return Err(FileError::NotRegular {
                path: self.path.clone(),
                what,
            });
        }
        if meta.len() > self.max_bytes {
            return Err(FileError::TooLarge {
                path: self.path.clone(),
                size: format!("{} bytes", meta.len()),
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Reads the whole file, within the rules above.
    pub fn read(&self) -> Result<Loaded, FileError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.read_error(e))?;
        self.admit(&meta)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&self.path)
            .map_err(|e| self.read_error(e))?;
        // What was opened may not be what was stat'ed (a symlink swapped in between).
        let meta = file.metadata().map_err(|e| self.read_error(e))?;
        self.admit(&meta)?;
        let fingerprint = Fingerprint::of(&meta);
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        (&mut file)
            .take(self.max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.read_error(e))?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(FileError::TooLarge {
                path: self.path.clone(),
                size: format!("more than {} bytes", self.max_bytes),
                limit: self.max_bytes,
            });
        }
        let after = file.metadata().map_err(|e| self.read_error(e))?;
        if Fingerprint::of(&after) != fingerprint || bytes.len() as u64 != after.len() {
            return Err(FileError::Changed {
                path: self.path.clone(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            self.read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        })?;
        Ok(Loaded { fingerprint, text })
    }

    /// Parses text read from this file.
    pub fn parse(&self, text: &str) -> Result<Manifest, FileError> {
        parse_manifest(text).map_err(|error| FileError::Manifest {
            path: self.path.clone(),
            error: Box::new(error),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_and_symlinks_to_them_are_read_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.yaml");
        std::fs::write(&file, "kind: Other\n").unwrap();
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        for path in [&file, &link] {
            let loaded = ConfigFile::new(path, 1024).read().unwrap();
            assert_eq!(loaded.text, "kind: Other\n");
        }
        let to_zero = dir.path().join("zero.yaml");
        std::os::unix::fs::symlink("/dev/zero", &to_zero).unwrap();
        let e = ConfigFile::new(&to_zero, 1024).read().unwrap_err();
        assert!(
            e.to_string()
                .ends_with("zero.yaml is a character device, not a regular file; only a regular file (or a symlink to one) is read"),
            "{e}"
        );
        let e = ConfigFile::new(dir.path(), 1024).read().unwrap_err();
        assert!(
            matches!(
                e,
                FileError::NotRegular {
                    what: "a directory",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn size_limit_is_checked_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.yaml");
        std::fs::write(&file, vec![b'#'; 2048]).unwrap();
        let e = ConfigFile::new(&file, 2047).read().unwrap_err();
        assert!(
            e.to_string().ends_with(
                "big.yaml is 2048 bytes, more than --config-max-bytes 2047; it was not read"
            ),
            "{e}"
        );
        assert_eq!(
            ConfigFile::new(&file, 2048).read().unwrap().text.len(),
            2048
        );
    }
}
