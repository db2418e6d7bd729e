//! Durable storage on local disk, one [redb](https://docs.rs/redb) file per store.
//!
//! - [`queue::DiskQueue`]: the disk buffer of one sink, a FIFO of byte records that survives a
//!   crash (appends are fsync'd before they are acknowledged; removals are cheap and may be
//!   replayed after a crash, which gives at-least-once delivery).
//! - [`dead_letters::DeadLetterStore`]: the events that could not be delivered, with why, kept
//!   until an operator replays or purges them.
//!
//! Every file is held exclusively by the process that opened it: a second open, from this
//! process or another one, fails with [`StorageError::Locked`].

use std::fmt::Display;
use std::path::{Path, PathBuf};

pub mod dead_letters;
mod group_commit;
pub mod queue;

/// What went wrong with a store on disk. Clone, because one failed group commit answers
/// every batch in it with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The file is in use by another process (e.g. `webhook-sink run` holds it).
    #[error("{path}: in use by another webhook-sink process")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// Any redb or I/O error; `message` is the source error's text.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The source error's text.
        message: String,
    },
    /// A stored record could not be decoded.
    #[error("{path}: stored record {key} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The record's key.
        key: u64,
        /// Why it does not decode.
        message: String,
    },
}

impl StorageError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            StorageError::Locked { path } | StorageError::Io { path, .. } | StorageError::Corrupt { path, .. } => path,
        }
    }

    pub(crate) fn io(path: &Path, error: impl Display) -> StorageError {
        StorageError::Io { path: path.to_path_buf(), message: error.to_string() }
    }
}

/// Opens or creates the redb file at `path`, creating its parent directories, and maps the lock
/// errors to [`StorageError::Locked`].
pub(crate) fn open_database(path: &Path, cache_bytes: usize) -> Result<redb::Database, StorageError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| StorageError::io(parent, e))?;
    }
    redb::Database::builder().set_cache_size(cache_bytes).create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            StorageError::Locked { path: path.to_path_buf() }
        }
        other => StorageError::io(path, other),
    })
}
