//! Who runs SQL where: one writer thread, and a pool of read connections.
//!
//! SQLite calls block, so none runs on a tokio worker thread. All writes go to
//! one connection owned by a dedicated OS thread, in arrival order: SQLite
//! allows one writer at a time anyway, and a single owner never waits on a
//! lock. Reads run on tokio's blocking pool with a read-only connection each;
//! in WAL mode they never wait for the writer.

use std::{
    sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc},
    thread::JoinHandle,
};

use natter_core::StoreError;
use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::{
    connect,
    error::{Result, closed},
};

/// Work for the writer thread. It sends its own answer back.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A thread owning the read-write connection, running jobs one at a time.
pub(crate) struct Writer {
    /// `None` once closed; dropping the sender is what stops the thread.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    pub(crate) fn start(conn: Connection) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("natter-sqlite-writer".into())
            .spawn(move || serve(conn, queue))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `f` on the writer connection, after every job sent before it.
    ///
    /// If the caller stops waiting, the job still runs: a send that was
    /// handed over is committed even if nobody hears the answer.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have gone; the work is done either way.
            let _ = reply.send(f(conn).map_err(StoreError::from));
        });
        lock(&self.jobs)
            .as_ref()
            .ok_or_else(closed)?
            .send(job)
            .map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Refuses new jobs, lets the queued ones finish, and waits for the
    /// thread to close the connection.
    pub(crate) async fn stop(&self) {
        drop(lock(&self.jobs).take());
        let Some(thread) = lock(&self.thread).take() else {
            return;
        };
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::error!("sqlite writer thread ended abnormally");
        }
    }
}

/// How many jobs pass between two fittings of the writer's cache to the
/// database's size.
const JOBS_PER_CACHE_FIT: u64 = 4096;

/// The writer thread: jobs until every sender is gone, then a clean close.
fn serve(mut conn: Connection, queue: mpsc::Receiver<Job>) {
    let mut jobs: u64 = 0;
    while let Ok(job) = queue.recv() {
        job(&mut conn);
        jobs += 1;
        if jobs.is_multiple_of(JOBS_PER_CACHE_FIT)
            && let Err(e) = connect::fit_writer_cache(&conn)
        {
            tracing::warn!(error = %e, "cannot resize the sqlite writer's cache");
        }
    }
    // Lets SQLite refresh its planner statistics where useful; cheap.
    if let Err(e) = conn.execute_batch("PRAGMA optimize") {
        tracing::warn!(error = %e, "sqlite optimize on close failed");
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the sqlite writer failed");
    }
}

/// Read-only connections, lent out one per read.
pub(crate) struct ReadPool {
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: waiting for a permit is waiting for a
    /// connection, without holding a tokio thread. Closed by `close`.
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(crate) fn new(connections: Vec<Connection>) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(connections.len())),
            idle: Mutex::new(connections),
        })
    }

    /// Runs `f` on a read connection on tokio's blocking pool.
    pub(crate) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        let pool = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let mut lease = Lease::take(pool, permit)?;
            let conn = lease.conn.as_mut().ok_or_else(closed)?;
            f(conn).map_err(StoreError::from)
        });
        task.await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    /// Refuses new reads and closes the idle connections; connections in use
    /// are closed when their read ends.
    pub(crate) fn close(&self) {
        // Under the lock, so that a returning lease sees either "open" and
        // its connection is cleared here, or "closed" and drops it itself.
        let mut idle = lock(&self.idle);
        self.permits.close();
        idle.clear();
    }
}

/// A connection on loan for one read; goes back to the pool when dropped,
/// even if the read panicked, so the pool never shrinks.
struct Lease {
    pool: Arc<ReadPool>,
    conn: Option<Connection>,
    /// Released after the connection is back (fields drop after `drop`).
    _permit: OwnedSemaphorePermit,
}

impl Lease {
    fn take(pool: Arc<ReadPool>, permit: OwnedSemaphorePermit) -> Result<Self, StoreError> {
        let conn = lock(&pool.idle).pop().ok_or_else(closed)?;
        Ok(Self {
            pool,
            conn: Some(conn),
            _permit: permit,
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut idle = lock(&self.pool.idle);
        if !self.pool.permits.is_closed() {
            idle.push(conn);
        }
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked (a queue
/// handle, a list of connections), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
