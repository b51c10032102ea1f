//! WAL checkpoints on their own thread and connection.
//!
//! SQLite's automatic checkpoint runs inside whichever commit crosses the
//! threshold: on natter's single writer, that is a send's commit, which
//! then waits while megabytes are copied into the database file and synced
//! (seen as 100+ ms spikes in send-to-ack latency). Here the writer never
//! checkpoints; this thread does, in PASSIVE mode, which copies what it can
//! without blocking the writer, and only forces a RESTART when the log has
//! grown very large. After each pass it flushes what it copied to the disk
//! itself, outside every lock (see [`Flush`]).

use std::{
    fs::File,
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
/// A log this many pages long (32 MiB of natter's 1 KiB pages) is
/// restarted even though the writer must wait for it.
///
/// Under a steady load a PASSIVE checkpoint never catches up (the writer
/// commits while it copies), so SQLite never rewinds the log by itself, and
/// only a RESTART, which holds the writer's lock, bounds it. A longer log
/// means rarer RESTARTs but a worse `natter-bench dm` ack p99 (median of
/// five alternating runs): 21.8 ms at 32 MiB, 23.4 at 16, 27.2 at 64,
/// 38-39 at 128 (two runs) and 74-106 at 256 (two runs). A log longer than
/// `journal_size_limit` (64 MiB, set in `connect`) is cut back at each
/// restart and then grown again, and a write that grows the file costs its
/// sync more than one that overwrites.
const FORCE_PAGES: i64 = 32_768;

pub(crate) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn start(path: &Path, sync: Synchronous) -> Result<Self> {
        let conn = connect::open_checkpointer(path, sync)?;
        let flush = Flush::open(path, sync)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("natter-sqlite-checkpoint".into())
            .spawn({
                let stop = stop.clone();
                move || run(conn, flush, &stop)
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

/// The checkpointer's own flush of the database file.
///
/// SQLite syncs the database file only when a checkpoint has copied the
/// whole log, which under a steady load is only the forced RESTART, while
/// it holds the writer's lock. That sync then wrote everything the PASSIVE
/// checkpoints had copied since the last one: in `natter-bench dm`,
/// 23-32 ms of writing (seen with strace) every ~0.4 s, with every commit
/// waiting. Flushed after each pass instead, outside every lock, the file
/// has little left for SQLite's sync: the writer's wait for a RESTART fell
/// to 3-4 ms, and the ack p99 to 22-26 ms from 26-29 (four alternating
/// runs each).
struct Flush {
    /// The database file, opened again; `None` with `synchronous = OFF`,
    /// where nothing is synced.
    file: Option<File>,
    /// The log's pages copied at the last flush: the next is due when a
    /// checkpoint has copied more.
    flushed: i64,
}

impl Flush {
    fn open(path: &Path, sync: Synchronous) -> Result<Self> {
        let file = match sync {
            Synchronous::Off => None,
            Synchronous::Normal | Synchronous::Full => Some(File::open(path).map_err(|e| {
                StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
            })?),
        };
        Ok(Self { file, flushed: 0 })
    }

    /// Flushes the database file if `progress` copied pages into it since
    /// the last flush.
    fn after(&mut self, progress: Progress) {
        let Some(file) = &self.file else { return };
        if progress.copied_pages == self.flushed {
            return;
        }
        match file.sync_data() {
            Ok(()) => self.flushed = progress.copied_pages,
            Err(e) => tracing::warn!(error = %e, "flushing the database file failed"),
        }
    }
}

fn run(conn: Connection, mut flush: Flush, stop: &AtomicBool) {
    let mut pause = MIN_PAUSE;
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(pause);
        let started = Instant::now();
        let outcome = checkpoint(&conn, "PASSIVE").inspect(|progress| flush.after(*progress));
        // The pass's time, flush included, sets the pause.
        pause = pause_after(started.elapsed());
        match outcome {
            Ok(progress) if progress.log_pages > FORCE_PAGES => {
                match checkpoint(&conn, "RESTART") {
                    // The log starts over, and so does its count of pages.
                    Ok(_) => flush.flushed = 0,
                    Err(e) => tracing::warn!(error = ?e, "sqlite checkpoint (restart) failed"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = ?e, "sqlite checkpoint failed"),
        }
    }
}

/// How long to wait after a pass (checkpoint and flush) that took `took`:
/// eight times as long (the checkpointer busy a ninth of the time), within
/// [`MIN_PAUSE`] and [`MAX_PAUSE`].
fn pause_after(took: Duration) -> Duration {
    took.saturating_mul(PAUSE_PER_CHECKPOINT_TIME)
        .clamp(MIN_PAUSE, MAX_PAUSE)
}

/// Where a checkpoint left the log.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// The log's length, in pages.
    log_pages: i64,
    /// Of those, the pages copied into the database file so far.
    copied_pages: i64,
}

/// Runs one checkpoint.
fn checkpoint(conn: &Connection, mode: &str) -> Result<Progress> {
    let (_busy, log_pages, copied_pages): (i64, i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(Progress {
        log_pages,
        copied_pages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_file_is_flushed_once_per_progress_and_never_without_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        std::fs::write(&path, b"").expect("create");
        let at = |copied_pages| Progress {
            log_pages: 100,
            copied_pages,
        };

        let mut flush = Flush::open(&path, Synchronous::Full).expect("open");
        assert!(flush.file.is_some());
        flush.after(at(0));
        assert_eq!(flush.flushed, 0);
        flush.after(at(40));
        assert_eq!(flush.flushed, 40);

        let mut unsynced = Flush::open(&path, Synchronous::Off).expect("open");
        assert!(unsynced.file.is_none());
        unsynced.after(at(40));
        assert_eq!(unsynced.flushed, 0);
    }

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
