//! Dead letters: events a sink could never deliver, kept with the reason, the last status
//! and the time, until a user replays or purges them (`webhook-sink dead-letters`).
//!
//! The store is one redb file, `data_dir/dead-letters.redb`. `webhook-sink run` opens it
//! at start ([`DeadLetters::open_now`]) and refuses to start if it cannot be opened and
//! written (a read-only or missing `data_dir`, another process holding the file), so that
//! the dead letters of a running pipeline do not fail for a reason known up front. The other
//! commands open it when first needed.
//!
//! A dead letter that still cannot be written (the disk is full, say) is logged by the
//! caller and counted here ([`DeadLetters::unwritten`]); `run` then exits non-zero. After an
//! I/O error the store is closed and opened again for the next dead letter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::event::Event;
use crate::storage::dead_letters::{DeadLetterStore, NewDeadLetter};
use crate::storage::StorageError;

/// The dead letter of `event` in `sink`: the one place a dead letter is made from an
/// event, whether the sink gave up on it or its buffer had no room for it.
pub fn letter(sink: &str, event: &Event, reason: String, last_status: Option<u16>, attempts: u32) -> NewDeadLetter {
    NewDeadLetter {
        sink: sink.to_string(),
        webhook_id: event.id.to_string(),
        event: event.incident.to_json(),
        reason,
        last_status,
        attempts,
        digest: None,
    }
}

/// The dead letter, in `sink`, of input that never became an event (a Kafka message that
/// does not decode): `input` describes it (where it came from, its bytes), `webhook_id`
/// is the id its events would have had.
pub fn input_letter(sink: &str, webhook_id: &str, input: serde_json::Value, reason: String) -> NewDeadLetter {
    NewDeadLetter {
        sink: sink.to_string(),
        webhook_id: webhook_id.to_string(),
        event: input,
        reason,
        last_status: None,
        attempts: 0,
        digest: None,
    }
}

/// The file dead letters are kept in, under `data_dir`.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("dead-letters.redb")
}

/// The pipeline's dead-letter store: opened at start by `run`, else when first needed.
#[derive(Debug)]
pub struct DeadLetters {
    path: PathBuf,
    store: Mutex<Option<Arc<DeadLetterStore>>>,
    /// Events whose dead letter could not be written.
    unwritten: AtomicU64,
}

impl DeadLetters {
    /// Dead letters kept under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        DeadLetters { path: store_path(data_dir), store: Mutex::new(None), unwritten: AtomicU64::new(0) }
    }

    /// Dead letters kept in a store that is already open (`dead-letters replay`).
    pub fn with_store(store: Arc<DeadLetterStore>) -> Self {
        DeadLetters { path: store.path().to_path_buf(), store: Mutex::new(Some(store)), unwritten: AtomicU64::new(0) }
    }

    /// Where they are kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the store now (creating `data_dir` and the file if needed, which writes to it)
    /// and keeps it open: the start-up check of `run`. Blocking.
    pub fn open_now(&self) -> Result<(), StorageError> {
        self.store().map(|_| ())
    }

    /// Events whose dead letter could not be written since this was made. For a sink with a
    /// memory buffer they are lost; a disk buffer keeps them in its file for the next start.
    pub fn unwritten(&self) -> u64 {
        self.unwritten.load(Ordering::Relaxed)
    }

    fn store(&self) -> Result<Arc<DeadLetterStore>, StorageError> {
        let mut slot = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(store) = slot.as_ref() {
            return Ok(store.clone());
        }
        let store = Arc::new(DeadLetterStore::open(&self.path)?);
        *slot = Some(store.clone());
        Ok(store)
    }

    /// How many dead letters each sink has stored now, in one pass: none while the store
    /// file does not exist (nothing was ever dead-lettered). Blocking (a read of the store).
    pub fn stored(&self) -> Result<HashMap<String, usize>, StorageError> {
        let opened = self.store.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if !opened && !self.path.exists() {
            return Ok(HashMap::new());
        }
        self.store()?.count_by_sink()
    }

    /// Stores dead letters durably (off the async threads).
    pub async fn record(&self, letters: Vec<NewDeadLetter>) -> Result<(), StorageError> {
        if letters.is_empty() {
            return Ok(());
        }
        let count = letters.len() as u64;
        let result = match self.store() {
            Ok(store) => {
                let path = self.path.clone();
                tokio::task::spawn_blocking(move || store.record(letters).map(|_| ()))
                    .await
                    .map_err(|e| StorageError::Io { path, message: e.to_string() })
                    .and_then(|r| r)
            }
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            self.unwritten.fetch_add(count, Ordering::Relaxed);
            if matches!(error, StorageError::Io { .. }) {
                // redb refuses every operation after an I/O error: open the file again next time.
                self.store.lock().unwrap_or_else(|p| p.into_inner()).take();
            }
        }
        result
    }
}
