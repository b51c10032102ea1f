//! Durable storage for natter: the implementations of [`natter_core::Store`].
//!
//! This crate owns everything natter keeps on disk and how: the SQL schema and
//! its migrations (one set per database under `migrations/`), the connections
//! and the threads that drive them, and the mapping between rows and the
//! domain types of `natter-core`. Today it has one backend, embedded SQLite
//! ([`SqliteStore`]); the chat logic above sees only the `Store` trait, so a
//! further backend (PostgreSQL) can be added beside it without touching it.

mod sqlite;

pub use sqlite::{SqliteConfig, SqliteStore, Synchronous, parse_sqlite_url};
