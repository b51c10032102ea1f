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
    time::{Duration, Instant},
};

use natter_core::StoreError;
use rusqlite::Connection;

use super::{config::Synchronous, connect, error::Result};

/// The pause between checkpoints, at least. Short, so that each checkpoint's
/// fsync of the database file is small: a large one delays the log fsync of
/// the commits running beside it (the disk serves both). In `natter-bench
/// latency` (2,000 sends/s), a checkpoint every 250 ms gave a delivery p99
/// of 7-8 ms and every 20 ms about 5; every 100 ms, 7.2-9.9 ms against
/// 5.7-8.1 ms (three alternating runs each). A checkpoint with nothing to
/// copy costs next to nothing.
const MIN_PAUSE: Duration = Duration::from_millis(20);
/// Under a heavy load the pause grows with the checkpoint's own duration, by
/// this factor, up to [`MAX_PAUSE`]. A checkpoint copies each page dirtied
/// since the last one once, however many commits dirtied it: in
/// `natter-bench dm` (25,000 sends/s into 500 conversations) each of 50
/// checkpoints a second copied most index leaves again, ~2.7 ms of CPU
/// each, 13 % of the core. With this pause the checkpointer took 0.56-0.59 s
/// of CPU per run instead of 1.34-1.73 s, and the ack p99 was 184-529 ms
/// against 349-1,929 ms (three alternating runs each); in `latency` the
/// pause stays at 20-22 ms and the p99 within the noise (median 6.5 ms
/// against 5.8 over nine alternating runs, 2.9-8.5 ms either way).
const PAUSE_PER_CHECKPOINT_TIME: u32 = 8;
/// The longest pause, so that the log, and the checkpoint that follows a
/// pause, stay bounded whatever the load.
const MAX_PAUSE: Duration = Duration::from_millis(200);
/// A log this many pages long (64 MiB of natter's 1 KiB pages) is
/// restarted even though the writer must wait for it.
///
/// Under a steady load a PASSIVE checkpoint never catches up (the writer
/// commits while it copies), so SQLite never rewinds the log by itself, and
/// only a RESTART, which holds the writer's lock, bounds it. In
/// `natter-bench dm` that is every ~0.4 s, and each RESTART kept the
/// writer's `BEGIN` waiting 4-16 ms. A 256 MiB limit made them four times
/// rarer but the ack p99 worse (74-106 ms against 22-27); running PASSIVE
/// passes back to back before the RESTART, so that it had less to copy,
/// did not shorten the wait (two runs each).
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
    let mut pause = MIN_PAUSE;
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(pause);
        let started = Instant::now();
        let outcome = checkpoint(&conn, "PASSIVE");
        pause = pause_after(started.elapsed());
        match outcome {
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

/// How long to wait after a checkpoint that took `took`: eight times as
/// long (the checkpointer busy a ninth of the time), within [`MIN_PAUSE`]
/// and [`MAX_PAUSE`].
fn pause_after(took: Duration) -> Duration {
    took.saturating_mul(PAUSE_PER_CHECKPOINT_TIME)
        .clamp(MIN_PAUSE, MAX_PAUSE)
}

/// Runs one checkpoint; returns the log's length in pages.
fn checkpoint(conn: &Connection, mode: &str) -> Result<i64> {
    let (_busy, log, _done): (i64, i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_grows_with_the_checkpoint_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(pause_after(Duration::ZERO), MIN_PAUSE);
        assert_eq!(pause_after(ms(1)), MIN_PAUSE);
        assert_eq!(pause_after(ms(10)), ms(80));
        assert_eq!(pause_after(ms(30)), MAX_PAUSE);
        assert_eq!(pause_after(Duration::MAX), MAX_PAUSE);
    }
}
