//! The failure type of the SQL code, and how it becomes a [`StoreError`].

use natter_core::StoreError;

/// A failure inside a database job: either SQLite itself failed, or the
/// answer about the data is an error (`NotFound`, `Conflict`, ...).
///
/// It exists so that `?` works on both kinds inside one function; it is
/// turned into a [`StoreError`] before it leaves the crate.
#[derive(Debug)]
pub(crate) enum Error {
    Sqlite(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl From<Error> for StoreError {
    /// A SQLite failure is the database's own problem: `Unavailable`, with
    /// SQLite's message (logged here, where the detail is still known).
    fn from(e: Error) -> Self {
        match e {
            Error::Store(e) => e,
            Error::Sqlite(e) => {
                tracing::warn!(error = %e, "sqlite failure");
                StoreError::Unavailable(e.to_string())
            }
        }
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// The answer of every call made after [`close`](crate::SqliteStore).
pub(crate) fn closed() -> StoreError {
    StoreError::Unavailable("store closed".into())
}
