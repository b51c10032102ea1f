//! Opening connections: the pragmas every connection gets, and migrations.

use std::{path::Path, time::Duration};

use natter_core::{StoreError, time::now_ms};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::{config::Synchronous, error::Result, vfs};

/// The schema, one step per file, applied in order and never edited once
/// released: a change is a new file.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_receipts.sql")),
    (3, include_str!("../../migrations/sqlite/0003_retries.sql")),
    (
        4,
        include_str!("../../migrations/sqlite/0004_no_last_seq.sql"),
    ),
];

/// Small pages: every commit writes each page it touched to the WAL and
/// syncs it, and a send touches about six (the message, three indexes, the
/// conversation). With 1 KiB instead of 4 KiB pages a commit writes a
/// quarter of the bytes: measured with `natter-bench latency`, p99 delivery
/// latency went from 14-29 ms to 8-9 ms at 2,000 sends/s on this machine.
const PAGE_SIZE: i64 = 1024;

/// The writer's page cache, by database size. Sends to many conversations
/// touch one leaf page per conversation in each message index; with SQLite's
/// default 2 MiB a busy writer spent a fifth of its time re-reading and
/// spilling pages (seen with perf in `natter-bench dm`). But while the
/// database is under 1 GiB (below SQLite's lock page), every commit in which
/// a b-tree split reorders pages ends with a scan of the whole page-cache
/// hash table (`balance_nonroot` parks a page past the lock page, and the
/// cache is then truncated back to the database size). The scan grows with
/// the pages cached: in `natter-bench dm` at 12,000 sends/s (168,000
/// messages), 8 MiB instead of 64 MiB took 10 % off the writer's CPU. So a
/// small database gets a small cache (the OS caches its file anyway) and a
/// large one, which never scans, a large cache.
const SMALL_DB_CACHE_KIB: i64 = 8 * 1024;
const LARGE_DB_CACHE_KIB: i64 = 64 * 1024;

/// Where SQLite's lock page is, and the scan above stops: 1 GiB.
const LARGE_DB_BYTES: i64 = 1 << 30;

/// After a checkpoint, truncate a WAL that grew past this many bytes.
const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Room for every distinct statement of the crate, so none is re-prepared.
const STATEMENT_CACHE: usize = 64;

/// Opens (creating if missing) the one read-write connection and brings the
/// schema up to date.
pub(crate) fn open_writer(path: &Path, sync: Synchronous) -> Result<Connection> {
    let mut conn = if sync == Synchronous::Full && vfs::register() {
        // Gathers each commit's WAL writes into one `pwrite`; sound only
        // when every commit syncs the log (see `vfs`).
        Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs::NAME)?
    } else {
        Connection::open(path)?
    };
    // Takes effect only on a new, empty database (before WAL is set).
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        let msg = format!(
            "cannot use WAL journal mode on {} (got {mode})",
            path.display()
        );
        return Err(StoreError::Unavailable(msg).into());
    }
    configure(&conn, sync)?;
    fit_writer_cache(&conn)?;
    // Checkpoints happen on their own thread (see `checkpoint`), never in a
    // commit of the writer.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Sizes the writer's page cache for the database's size (see
/// [`SMALL_DB_CACHE_KIB`]); the writer calls it again as the file grows.
pub(crate) fn fit_writer_cache(conn: &Connection) -> rusqlite::Result<()> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let kib = writer_cache_kib(pages.saturating_mul(page_size));
    conn.pragma_update(None, "cache_size", -kib)
}

fn writer_cache_kib(database_bytes: i64) -> i64 {
    if database_bytes >= LARGE_DB_BYTES {
        LARGE_DB_CACHE_KIB
    } else {
        SMALL_DB_CACHE_KIB
    }
}

/// Opens the connection that checkpoints the WAL; the writer must have
/// created the file.
pub(crate) fn open_checkpointer(path: &Path, sync: Synchronous) -> Result<Connection> {
    let conn = Connection::open(path)?;
    configure(&conn, sync)?;
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    Ok(conn)
}

/// Opens a read-only connection; the writer must have created the file.
pub(crate) fn open_reader(path: &Path, sync: Synchronous) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    // WAL is a property of the file, already set by the writer; this only
    // confirms it on this connection.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    configure(&conn, sync)?;
    Ok(conn)
}

/// The settings every connection shares.
fn configure(conn: &Connection, sync: Synchronous) -> Result<()> {
    conn.pragma_update(None, "synchronous", sync.pragma_value())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_handler(Some(wait_for_lock))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// How long a statement waits for a lock another connection holds before
/// it fails with `SQLITE_BUSY`, at least.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The pauses between tries for a lock: [`SHORT_PAUSES`] of
/// [`SHORT_PAUSE`], then [`LONG_PAUSE`]s.
///
/// SQLite's own busy handler (`busy_timeout`) sleeps 1, 2, 5, 10 ms and
/// more. In `natter-bench dm` the checkpointer's forced RESTART (see
/// `checkpoint`) held the writer's lock every ~0.4 s (now every ~0.2 s, and
/// briefly), and the writer's `BEGIN` slept 8-18 ms, up to 79, each time,
/// for a lock freed sooner. With these
/// pauses the ack p99 was 22-28 ms against 31-48 ms (four alternating runs
/// each), for about 1 % more server CPU.
const SHORT_PAUSE: Duration = Duration::from_micros(100);
const SHORT_PAUSES: u32 = 20;
const LONG_PAUSE: Duration = Duration::from_millis(1);

/// The busy handler: sleeps before the next try, or gives up.
fn wait_for_lock(tries: i32) -> bool {
    match lock_pause(u32::try_from(tries).unwrap_or(0)) {
        Some(pause) => {
            std::thread::sleep(pause);
            true
        }
        None => false,
    }
}

/// The pause after the `tries`-th failed try for a lock (0 for the first),
/// or `None` once the pauses so far add up to [`LOCK_TIMEOUT`].
fn lock_pause(tries: u32) -> Option<Duration> {
    let (waited, pause) = match tries.checked_sub(SHORT_PAUSES) {
        None => (SHORT_PAUSE * tries, SHORT_PAUSE),
        Some(long) => (SHORT_PAUSE * SHORT_PAUSES + LONG_PAUSE * long, LONG_PAUSE),
    };
    (waited < LOCK_TIMEOUT).then_some(pause)
}

/// Applies every migration not yet recorded in `schema_migrations`, each in
/// its own transaction with its record, so a failed step leaves no trace.
fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )?;
    refuse_newer_schema(conn)?;
    for &(version, sql) in MIGRATIONS {
        apply(conn, version, sql)?;
    }
    Ok(())
}

/// A database migrated by a newer natter may hold data this one misreads.
fn refuse_newer_schema(conn: &Connection) -> Result<()> {
    let newest: Option<i64> =
        conn.query_row("SELECT max(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    match newest {
        Some(v) if v > known => Err(StoreError::Unavailable(format!(
            "database schema version {v} is newer than this natter knows ({known})"
        ))
        .into()),
        _ => Ok(()),
    }
}

fn apply(conn: &mut Connection, version: i64, sql: &str) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let done = tx
        .query_row(
            "SELECT 1 FROM schema_migrations WHERE version = ?1",
            [version],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !done {
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            [version, now_ms()],
        )?;
        tracing::info!(version, "applied sqlite migration");
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_cache_grows_once_the_database_passes_the_lock_page() {
        assert_eq!(writer_cache_kib(0), SMALL_DB_CACHE_KIB);
        assert_eq!(writer_cache_kib(LARGE_DB_BYTES - 1), SMALL_DB_CACHE_KIB);
        assert_eq!(writer_cache_kib(LARGE_DB_BYTES), LARGE_DB_CACHE_KIB);
    }

    #[test]
    fn lock_waits_start_short_and_give_up_after_the_timeout() {
        assert_eq!(lock_pause(0), Some(SHORT_PAUSE));
        assert_eq!(lock_pause(SHORT_PAUSES - 1), Some(SHORT_PAUSE));
        assert_eq!(lock_pause(SHORT_PAUSES), Some(LONG_PAUSE));
        let pauses: Vec<Duration> = (0..).map_while(lock_pause).collect();
        let waited: Duration = pauses.iter().sum();
        assert!(waited >= LOCK_TIMEOUT, "gave up after {waited:?}");
        assert!(waited < LOCK_TIMEOUT + LONG_PAUSE, "waited {waited:?}");
        assert_eq!(lock_pause(u32::MAX), None);
    }

    #[test]
    fn a_writer_waits_for_a_lock_another_connection_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let mut holder = open_writer(&path, Synchronous::Full).expect("open");
        let waiter = open_writer(&path, Synchronous::Full).expect("open");
        let tx = holder
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("lock");
        let (started, waiter_started) = std::sync::mpsc::channel::<()>();
        let waiting = std::thread::spawn(move || {
            let _ = started.send(());
            waiter.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        });
        // Hold the lock until the waiter has surely tried for it.
        waiter_started.recv().expect("waiter started");
        std::thread::sleep(Duration::from_millis(50));
        tx.commit().expect("commit");
        waiting
            .join()
            .expect("waiter")
            .expect("the waiter got the lock once it was free");
    }

    #[test]
    fn a_new_database_opens_with_the_small_writer_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = open_writer(&dir.path().join("t.db"), Synchronous::Full).expect("open");
        let cache: i64 = conn
            .pragma_query_value(None, "cache_size", |r| r.get(0))
            .expect("cache_size");
        assert_eq!(cache, -SMALL_DB_CACHE_KIB);
    }
}
