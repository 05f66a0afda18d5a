//! hero_proc's SQLite store: config rows (actions, services, secrets as ciphertext) with
//! the reconciler's inventory, job and run history, sync history and state, applied
//! config migrations; and the compactor that keeps all of it bounded (SPEC 5.5).
//!
//! Synchronous by design, and short: one writer connection behind its own mutex for
//! writes, and a small pool of read-only connections for reads, which in WAL mode never
//! wait for a write or for compaction (it works in small batches and releases the writer
//! between them). The WAL is checkpointed by a thread of the store's own
//! (`checkpoint`), so no commit waits for an `fsync`. Objects are stored as canonical JSON of the
//! `hero_proc_spec` types. Job output never goes here; it lives in the file-based log
//! store, keyed by [`JobId`].
//!
//! ```no_run
//! use hero_proc_store::{Origin, Retention, Store};
//! # fn demo(action: &hero_proc_spec::Action) -> Result<(), hero_proc_store::StoreError> {
//! let store = Store::open("/tmp/hero/var/hero_proc/hero_proc.db")?;
//! store.transaction(|tx| {
//!     tx.put_action(action, &Origin::git("3f2c1a0"))?;
//!     tx.delete_service("core", "old")?;
//!     Ok(())
//! })?;
//! let report = store.compact(&Retention::default(), 1_760_000_000_000)?;
//! println!("reclaimed {} bytes", report.bytes_reclaimed);
//! # Ok(()) }
//! ```

#[cfg(not(unix))]
compile_error!("hero_proc_store supports Unix only (file modes, errno, /proc)");

mod api;
mod checkpoint;
mod compact;
mod db;
mod error;
pub mod schema;
mod store;
mod types;

pub use compact::{ANALYZE_AFTER_ROWS, CompactStep};
pub use error::StoreError;
pub use store::{Batch, MIN_FREE_BYTES, READERS, Store, StoreOptions, Tx};
pub use types::*;

/// Current wall clock in Unix milliseconds, the unit of every `*_ms` field.
pub fn now_ms() -> i64 {
    db::now_ms()
}

#[cfg(test)]
mod send_sync {
    fn assert_send_sync<T: Send + Sync>() {}
    #[test]
    fn store_is_send_and_sync() {
        assert_send_sync::<super::Store>();
    }
}
