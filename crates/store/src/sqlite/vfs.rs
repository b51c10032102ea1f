//! The `natter` VFS: SQLite's own unix VFS, except that the writer's appends
//! to the WAL reach the file as one `pwrite` per commit instead of two per
//! page.
//!
//! SQLite writes each WAL frame with two calls, the 24-byte frame header and
//! then the page, and ends a commit with `xSync`. A send dirties three to
//! five pages, so at 12,000 sends/s in `natter-bench dm` the writer made over
//! 100,000 `pwrite`s per second, about 15 % of the server's core in system
//! calls. Here the WAL file's writes are gathered in memory while they are
//! contiguous and go to the file in one call before anything that must see
//! them: `xSync`, a read of the gathered range, `xTruncate`, `xFileSize`,
//! `xFileControl`, `xClose`, or a write elsewhere in the file.
//!
//! Why this is as durable as the unix VFS: a WAL transaction is committed
//! once its frames are synced and SQLite has published them in the shared
//! WAL index, and SQLite publishes a commit only after its `xSync` returns.
//! This holds only with `synchronous = FULL`, where every commit syncs the
//! log, so [`connect`](super::connect) uses this VFS for the writer under
//! `FULL` only: with `NORMAL` or `OFF`, other connections could be shown
//! frames still held here. Frames held when a write fails are dropped and
//! the failure is returned from the call that flushed them, which SQLite
//! treats as a failed commit.
//!
//! The file object SQLite allocates for this VFS holds the unix VFS's own
//! file first, unchanged (so its methods can be called on the same pointer:
//! os_unix.c never reads a file's method table back), then the buffer. Only
//! WAL files opened read-write get the buffering methods; every other file
//! keeps the unix methods untouched.

// The SQLite VFS interface is a C ABI: this module is the only unsafe code
// in natter, and nothing outside it calls into it except by VFS name.
#![allow(unsafe_code)]

use std::{
    ffi::{CStr, c_int, c_void},
    mem::{align_of, size_of},
    ptr,
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use rusqlite::ffi;

/// The name connections pass to `sqlite3_open_v2` to use this VFS.
pub(crate) const NAME: &CStr = c"natter";

/// Gathered writes past this many bytes go to the file without waiting for
/// the sync: a bulk import can write megabytes in one transaction.
const MAX_GATHERED: usize = 1 << 20;

/// The most one call to the unix VFS's `xWrite` is given: it writes at most
/// 128 KiB - 1 bytes per `pwrite`, as SQLite itself never asks for more.
const WRITE_CHUNK: usize = 64 * 1024;

#[cfg(test)]
thread_local! {
    /// Calls made to the unix VFS's `xWrite` for WAL files on this thread.
    static FILE_WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Where a file's [`Extras`] start: after the unix VFS's file, aligned. Set
/// once by [`register`], before any file is opened.
static EXTRAS_OFFSET: AtomicUsize = AtomicUsize::new(0);

/// Registers the VFS with SQLite once per process; false if SQLite refused.
pub(crate) fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    // SAFETY: runs once; see `register_once`.
    *REGISTERED.get_or_init(|| unsafe { register_once() })
}

/// Calls made to the unix VFS's `xWrite` for WAL files on this thread.
#[cfg(test)]
fn file_writes() -> u64 {
    FILE_WRITES.with(std::cell::Cell::get)
}

/// SAFETY: `sqlite3_vfs_find` and `sqlite3_vfs_register` are thread-safe;
/// the registered struct is leaked, so it outlives every connection.
unsafe fn register_once() -> bool {
    let unix = unsafe { ffi::sqlite3_vfs_find(ptr::null()) };
    // What follows relies on how os_unix.c works; on another default VFS the
    // writer keeps that one.
    if unix.is_null() || unsafe { CStr::from_ptr((*unix).zName) } != c"unix" {
        return false;
    }
    // A copy of the default VFS: os_unix.c's methods other than xOpen never
    // look at the VFS pointer they are given, so they work on the copy.
    let mut vfs = unsafe { *unix };
    let offset = usize::try_from(vfs.szOsFile)
        .unwrap_or(0)
        .next_multiple_of(align_of::<Extras>());
    let Ok(size) = c_int::try_from(offset + size_of::<Extras>()) else {
        return false;
    };
    EXTRAS_OFFSET.store(offset, Ordering::Relaxed);
    vfs.szOsFile = size;
    vfs.zName = NAME.as_ptr();
    vfs.pNext = ptr::null_mut();
    vfs.pAppData = unix.cast::<c_void>();
    vfs.xOpen = Some(open);
    let vfs = Box::leak(Box::new(vfs));
    unsafe { ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK }
}

/// What this VFS keeps beside the unix VFS's file.
struct Extras {
    /// The unix VFS's methods for this file, which do the real work.
    unix: *const ffi::sqlite3_io_methods,
    /// Writes not yet made, contiguous from `start`.
    gathered: Vec<u8>,
    start: i64,
}

impl Extras {
    /// The file offset just past the gathered writes.
    fn end(&self) -> i64 {
        self.start + self.gathered.len() as i64
    }
}

/// Where `file`'s extras live.
fn extras_ptr(file: *mut ffi::sqlite3_file) -> *mut Extras {
    file.cast::<u8>()
        .wrapping_add(EXTRAS_OFFSET.load(Ordering::Relaxed))
        .cast::<Extras>()
}

/// SAFETY: `file` must be a file of this VFS whose extras were initialised
/// (one opened with [`WAL_METHODS`]), and SQLite calls a file's methods from
/// one thread at a time.
unsafe fn extras<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Extras {
    unsafe { &mut *extras_ptr(file) }
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let unix_vfs = unsafe { (*vfs).pAppData.cast::<ffi::sqlite3_vfs>() };
    let Some(unix_open) = (unsafe { (*unix_vfs).xOpen }) else {
        return ffi::SQLITE_ERROR;
    };
    let rc = unsafe { unix_open(unix_vfs, name, file, flags, out_flags) };
    let gather = flags & ffi::SQLITE_OPEN_WAL != 0 && flags & ffi::SQLITE_OPEN_READWRITE != 0;
    let methods = unsafe { (*file).pMethods };
    if rc != ffi::SQLITE_OK || !gather || methods.is_null() {
        return rc;
    }
    let extras = Extras {
        unix: methods,
        gathered: Vec::new(),
        start: 0,
    };
    // SAFETY: SQLite allocated `szOsFile` bytes for the file, room for the
    // unix file and the extras after it.
    unsafe {
        ptr::write(extras_ptr(file), extras);
        (*file).pMethods = &WAL_METHODS;
    }
    rc
}

/// Makes the gathered writes, [`WRITE_CHUNK`] bytes per call. On failure
/// they are dropped: SQLite fails the commit they belong to and never
/// expects them in the file.
unsafe fn flush(file: *mut ffi::sqlite3_file, extras: &mut Extras) -> c_int {
    let Some(write) = (unsafe { (*extras.unix).xWrite }) else {
        extras.gathered.clear();
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut offset = extras.start;
    let mut rc = ffi::SQLITE_OK;
    for chunk in extras.gathered.chunks(WRITE_CHUNK) {
        #[cfg(test)]
        FILE_WRITES.with(|n| n.set(n.get() + 1));
        // `chunk.len()` fits: WRITE_CHUNK does.
        let len = chunk.len() as c_int;
        rc = unsafe { write(file, chunk.as_ptr().cast(), len, offset) };
        if rc != ffi::SQLITE_OK {
            break;
        }
        offset += i64::from(len);
    }
    extras.gathered.clear();
    rc
}

/// Calls the unix method `$method` with `$args` after making the gathered
/// writes (when `$flush` says so), or returns `$missing` if it has none.
macro_rules! forward {
    ($file:ident, $method:ident, flush, $missing:expr $(, $arg:expr)*) => {{
        let extras = unsafe { extras($file) };
        let rc = unsafe { flush($file, extras) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        match unsafe { (*extras.unix).$method } {
            Some(method) => unsafe { method($file $(, $arg)*) },
            None => $missing,
        }
    }};
    ($file:ident, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        let extras = unsafe { extras($file) };
        match unsafe { (*extras.unix).$method } {
            Some(method) => unsafe { method($file $(, $arg)*) },
            None => $missing,
        }
    }};
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let extras = unsafe { extras(file) };
    let Ok(len) = usize::try_from(amount) else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    if !extras.gathered.is_empty() && offset != extras.end() {
        let rc = unsafe { flush(file, extras) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    if extras.gathered.is_empty() {
        extras.start = offset;
    }
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
    extras.gathered.extend_from_slice(bytes);
    if extras.gathered.len() >= MAX_GATHERED {
        return unsafe { flush(file, extras) };
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    data: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    let extras = unsafe { extras(file) };
    let overlaps = offset < extras.end() && offset + i64::from(amount) > extras.start;
    if overlaps {
        let rc = unsafe { flush(file, extras) };
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    forward!(file, xRead, ffi::SQLITE_IOERR_READ, data, amount, offset)
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let extras = unsafe { extras(file) };
    let flushed = unsafe { flush(file, extras) };
    let closed = match unsafe { (*extras.unix).xClose } {
        Some(close) => unsafe { close(file) },
        None => ffi::SQLITE_OK,
    };
    // SAFETY: initialised in `open`, and SQLite calls xClose once.
    unsafe { ptr::drop_in_place(extras) };
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    forward!(file, xTruncate, flush, ffi::SQLITE_IOERR_TRUNCATE, size)
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    forward!(file, xSync, flush, ffi::SQLITE_IOERR_FSYNC, flags)
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    forward!(file, xFileSize, flush, ffi::SQLITE_IOERR_FSTAT, size)
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    forward!(file, xFileControl, flush, ffi::SQLITE_NOTFOUND, op, arg)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xLock, ffi::SQLITE_OK, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    forward!(file, xUnlock, ffi::SQLITE_OK, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    forward!(file, xCheckReservedLock, ffi::SQLITE_OK, out)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xSectorSize, 4096)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    forward!(file, xDeviceCharacteristics, 0)
}

// A WAL file is never memory-mapped or used for shared memory (those are
// the database file's), but a method table of version 3 must have them.
unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    page_size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    forward!(
        file,
        xShmMap,
        ffi::SQLITE_IOERR_SHMMAP,
        page,
        page_size,
        extend,
        out
    )
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags)
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    forward!(file, xShmBarrier, ())
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    forward!(file, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    forward!(file, xFetch, flush, ffi::SQLITE_OK, offset, amount, out)
}

unsafe extern "C" fn unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    forward!(file, xUnfetch, ffi::SQLITE_OK, offset, page)
}

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    use super::*;

    /// A WAL database on this VFS, as the writer opens it.
    fn open_gathering(path: &std::path::Path) -> Connection {
        assert!(register(), "SQLite refused the VFS");
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), NAME)
            .expect("open with the natter VFS");
        conn.execute_batch(
            "PRAGMA page_size = 1024;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);",
        )
        .expect("set up");
        conn
    }

    #[test]
    fn a_commit_reaches_the_wal_in_one_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open_gathering(&dir.path().join("t.db"));
        let before = file_writes();
        let tx = conn.transaction().expect("begin");
        for k in 0..30 {
            tx.execute("INSERT INTO t (k, v) VALUES (?1, zeroblob(900))", [k])
                .expect("insert");
        }
        tx.commit().expect("commit");
        // About 35 pages: 70 writes on the unix VFS.
        assert_eq!(file_writes() - before, 1);
    }

    #[test]
    fn other_connections_see_every_commit_and_a_reopen_finds_it_intact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let mut writer = open_gathering(&path);
        let reader = Connection::open(&path).expect("open on the unix VFS");
        for round in 1..=50_i64 {
            let tx = writer.transaction().expect("begin");
            for i in 0..round {
                tx.execute(
                    "INSERT INTO t (v) VALUES (randomblob(?1))",
                    [100 + 40 * (i % 20)],
                )
                .expect("insert");
            }
            tx.commit().expect("commit");
            let count: i64 = reader
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("count");
            assert_eq!(count, round * (round + 1) / 2, "after commit {round}");
            if round % 10 == 0 {
                // The checkpoint reads the frames back from the file.
                reader
                    .execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                    .expect("checkpoint");
            }
        }
        drop(writer);
        drop(reader);
        let reopened = open_gathering(&path);
        let check: String = reopened
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok");
        let count: i64 = reopened
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(count, 50 * 51 / 2);
    }

    #[test]
    fn a_transaction_larger_than_the_gathering_limit_commits_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let mut conn = open_gathering(&path);
        let tx = conn.transaction().expect("begin");
        // About 3 MiB of pages: several flushes before the sync, and chunks
        // the unix VFS could not take in one call.
        for _ in 0..3000 {
            tx.execute("INSERT INTO t (v) VALUES (randomblob(1000))", [])
                .expect("insert");
        }
        tx.commit().expect("commit");
        drop(conn);
        let reader = Connection::open(&path).expect("open on the unix VFS");
        let (count, bytes): (i64, i64) = reader
            .query_row("SELECT count(*), sum(length(v)) FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .expect("count");
        assert_eq!((count, bytes), (3000, 3_000_000));
    }
}
