//! The SQLite backend: one file, one writer thread, a few readers.

mod checkpoint;
mod config;
mod connect;
mod error;
mod read;
mod rows;
mod vfs;
mod workers;
mod write;

use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use async_trait::async_trait;
use natter_core::{
    ConversationId, MessageId, NewMessage, StoredMessage, UserId,
    store::{
        Appended, ConversationInfo, ConversationSummary, ImportData, ImportReport, NewConversation,
        NewUser, Store, StoreError, SyncPage, SyncQuery, User,
    },
};
use rusqlite::Connection;

pub use config::{SqliteConfig, Synchronous, parse_sqlite_url};
use workers::{ReadPool, Writer};

/// natter's store in an embedded SQLite database (WAL mode).
///
/// Writes are serialized on one connection owned by a dedicated thread, so
/// `seq` assignment never races and a batch of sends costs one commit (one
/// fsync under [`Synchronous::Full`]). Reads use a pool of read-only
/// connections on tokio's blocking threads and never wait for the writer.
pub struct SqliteStore {
    path: PathBuf,
    /// The file the connections opened. Open connections keep working on a
    /// deleted or replaced file, so `ping` compares the path against it to
    /// notice that the database is gone.
    file_id: Option<FileId>,
    writer: Writer,
    /// Each conversation's newest `seq`, used only on the writer thread (the
    /// lock is never contended): one read fewer per send.
    last_seqs: Arc<Mutex<write::LastSeqs>>,
    readers: Arc<ReadPool>,
    checkpointer: Mutex<checkpoint::Checkpointer>,
}

/// What identifies a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

fn file_id(path: &std::path::Path) -> Option<FileId> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(FileId(meta.dev(), meta.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Some(FileId(0, 0))
    }
}

impl SqliteStore {
    /// Opens the database, creating the file if missing, and applies the
    /// pending migrations. `read_connections` of 0 is taken as 1.
    pub async fn open(config: SqliteConfig) -> Result<Self, StoreError> {
        let path = config.path.clone();
        let synchronous = config.synchronous;
        let (writer, readers) = tokio::task::spawn_blocking(move || open_connections(&config))
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the database failed: {e}")))??;
        tracing::info!(path = %path.display(), readers = readers.len(), "sqlite store open");
        let checkpointer = checkpoint::Checkpointer::start(&path, synchronous)?;
        Ok(Self {
            file_id: file_id(&path),
            path,
            writer: Writer::start(writer)?,
            last_seqs: Arc::default(),
            readers: ReadPool::new(readers),
            checkpointer: Mutex::new(checkpointer),
        })
    }
}

/// The writer first: it creates the file, sets WAL and migrates, all of
/// which the read-only connections need.
fn open_connections(config: &SqliteConfig) -> Result<(Connection, Vec<Connection>), StoreError> {
    let writer = connect::open_writer(&config.path, config.synchronous)?;
    let readers = (0..config.read_connections.max(1))
        .map(|_| connect::open_reader(&config.path, config.synchronous))
        .collect::<error::Result<Vec<_>>>()?;
    Ok((writer, readers))
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.readers.run(|c| read::ping(c)).await?;
        if file_id(&self.path) != self.file_id {
            return Err(StoreError::Unavailable(format!(
                "the database file {} is gone or was replaced",
                self.path.display()
            )));
        }
        Ok(())
    }

    async fn user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        let id = id.clone();
        self.readers.run(move |c| read::user(c, &id)).await
    }

    async fn add_user(&self, user: NewUser) -> Result<User, StoreError> {
        self.writer.run(move |c| write::add_user(c, user)).await
    }

    async fn set_last_seen(&self, user: &UserId, at_ms: i64) -> Result<(), StoreError> {
        let user = user.clone();
        self.writer
            .run(move |c| write::set_last_seen(c, &user, at_ms))
            .await
    }

    async fn create_conversation(
        &self,
        conversation: NewConversation,
    ) -> Result<ConversationInfo, StoreError> {
        self.writer
            .run(move |c| write::create_conversation(c, conversation))
            .await
    }

    async fn conversation(
        &self,
        id: &ConversationId,
    ) -> Result<Option<ConversationInfo>, StoreError> {
        let id = id.clone();
        self.readers.run(move |c| read::conversation(c, &id)).await
    }

    async fn conversations_of(&self, user: &UserId) -> Result<Vec<ConversationId>, StoreError> {
        let user = user.clone();
        self.readers
            .run(move |c| read::conversations_of(c, &user))
            .await
    }

    async fn append(
        &self,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<Result<Appended, StoreError>>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let last_seqs = self.last_seqs.clone();
        self.writer
            .run(move |c| {
                let mut last_seqs = last_seqs.lock().unwrap_or_else(PoisonError::into_inner);
                write::append(c, &mut last_seqs, batch)
            })
            .await
    }

    async fn sync(&self, query: SyncQuery) -> Result<SyncPage, StoreError> {
        self.readers.run(move |c| read::sync(c, &query)).await
    }

    async fn import(&self, data: ImportData) -> Result<ImportReport, StoreError> {
        self.writer.run(move |c| write::import(c, &data)).await
    }

    async fn contacts_of(
        &self,
        user: &UserId,
        max_members: usize,
    ) -> Result<Vec<User>, StoreError> {
        let user = user.clone();
        self.readers
            .run(move |c| read::contacts_of(c, &user, max_members))
            .await
    }

    async fn message(&self, id: &MessageId) -> Result<Option<StoredMessage>, StoreError> {
        let id = id.clone();
        self.readers.run(move |c| read::message(c, &id)).await
    }

    async fn delivered_watermarks(
        &self,
        keys: Vec<(ConversationId, UserId)>,
    ) -> Result<Vec<i64>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.readers
            .run(move |c| read::delivered_watermarks(c, &keys))
            .await
    }

    async fn advance_delivered(
        &self,
        updates: Vec<(ConversationId, UserId, i64)>,
    ) -> Result<Vec<i64>, StoreError> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        self.writer
            .run(move |c| write::advance_delivered(c, &updates))
            .await
    }

    async fn mark_read(
        &self,
        conversation: &ConversationId,
        user: &UserId,
        seq: i64,
    ) -> Result<i64, StoreError> {
        let (conversation, user) = (conversation.clone(), user.clone());
        self.writer
            .run(move |c| write::mark_read(c, &conversation, &user, seq))
            .await
    }

    async fn conversation_summaries(
        &self,
        user: &UserId,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        let user = user.clone();
        self.readers
            .run(move |c| read::conversation_summaries(c, &user))
            .await
    }

    async fn history(
        &self,
        conversation: &ConversationId,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conversation = conversation.clone();
        self.readers
            .run(move |c| read::history(c, &conversation, before, limit))
            .await
    }

    async fn add_member(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<bool, StoreError> {
        let (conversation, user) = (conversation.clone(), user.clone());
        self.writer
            .run(move |c| write::add_member(c, &conversation, &user))
            .await
    }

    async fn remove_member(
        &self,
        conversation: &ConversationId,
        user: &UserId,
    ) -> Result<bool, StoreError> {
        let (conversation, user) = (conversation.clone(), user.clone());
        self.writer
            .run(move |c| write::remove_member(c, &conversation, &user))
            .await
    }

    /// Readers first, so the writer's connection is the last one open: its
    /// close checkpoints the WAL into the database file.
    async fn close(&self) {
        self.checkpointer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop();
        self.readers.close();
        self.writer.stop().await;
        tracing::info!(path = %self.path.display(), "sqlite store closed");
    }
}
