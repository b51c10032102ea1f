//! WAL checkpoints on their own thread and connection.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses the
//! threshold: on natter's single writer, that is a send's commit, which
//! then waits while megabytes are copied into the database file and synced
//! (seen as 100+ ms spikes in send-to-ack latency). Here the writer never
//! checkpoints; this thread does, in PASSIVE mode, which copies what it can
//! without blocking the writer, and only forces a RESTART when the log has
//! grown very large.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use natter_core::StoreError;
use rusqlite::Connection;

use super::{config::Synchronous, connect, error::Result};

/// How often the log is checkpointed. Often, so that each checkpoint's
/// fsync of the database file is small: a large one delays the log fsync of
/// the commits running beside it (the disk serves both). At 2,000 sends/s,
/// every 250 ms gave a send-to-delivery p99 of 7-8 ms, every 20 ms about 5.
/// A checkpoint with nothing to copy costs next to nothing.
const EVERY: Duration = Duration::from_millis(20);
/// A log this many pages long (~256 MiB) is checkpointed even if the writer
/// must wait for it.
const FORCE_PAGES: i64 = 65_536;

pub(crate) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path, sync: Synchronous) -> Result<Self> {
        let conn = connect::open_checkpointer(path, sync)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("natter-sqlite-checkpoint".into())
            .spawn({
                let stop = stop.clone();
                move || run(conn, &stop)
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start checkpoint thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(conn: Connection, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(EVERY);
        match checkpoint(&conn, "PASSIVE") {
            Ok(log_pages) if log_pages > FORCE_PAGES => {
                if let Err(e) = checkpoint(&conn, "RESTART") {
                    tracing::warn!(error = ?e, "sqlite checkpoint (restart) failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = ?e, "sqlite checkpoint failed"),
        }
    }
}

/// Runs one checkpoint; returns the log's length in pages.
fn checkpoint(conn: &Connection, mode: &str) -> Result<i64> {
    let (_busy, log, _done): (i64, i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(log)
}
