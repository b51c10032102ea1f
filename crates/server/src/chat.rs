//! The chat service: what happens to a send, a sync, between the socket and
//! the seams.
//!
//! Sends go through one committer task: it takes every send that is waiting,
//! commits them in one store transaction (group commit), then, in commit
//! order, publishes each new message and acks its sender. One committer is
//! what makes every connection see a conversation's messages in `seq` order.
//! Membership is checked against an in-memory cache, not a query per send.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use natter_core::{
    Broker, ConversationId, Event, EventKind, Limits, MessageError, MessageId, NewMessage, Store,
    StoreError, StoredMessage, SyncQuery, UserId, time,
};
use natter_protocol::{ErrorCode, SendMessage, ServerFrame, SyncRequest, WireMessage};
use tokio::sync::{mpsc, oneshot};

use crate::{config::Config, hub::Connection, outbox::Outgoing};

/// An error answered to the client as an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => {
                Refusal::new(ErrorCode::NotFound, format!("{what} not found"))
            }
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "store unavailable");
                Refusal::new(ErrorCode::InternalError, "storage unavailable, retry later")
            }
            other => Refusal::new(ErrorCode::InvalidMessage, other.to_string()),
        }
    }
}

impl From<MessageError> for Refusal {
    fn from(e: MessageError) -> Self {
        let code = match e {
            MessageError::ContentTooLarge { .. } => ErrorCode::MessageTooLarge,
            _ => ErrorCode::InvalidMessage,
        };
        Refusal::new(code, e.to_string())
    }
}

/// A conversation's members, as cached.
#[derive(Debug)]
struct Members {
    /// Shared with every event of the conversation as its audience.
    list: Arc<[UserId]>,
    set: HashSet<UserId>,
}

/// Work for the committer.
enum Commit {
    Send {
        message: NewMessage,
        audience: Arc<[UserId]>,
        sender: Arc<Connection>,
        request_id: Option<String>,
    },
    /// Answered once every send queued before it is committed and acked.
    Barrier(oneshot::Sender<()>),
}

pub struct Chat {
    store: Arc<dyn Store>,
    limits: Limits,
    sync_page: usize,
    /// Conversation members, loaded on first use.
    members: RwLock<HashMap<ConversationId, Arc<Members>>>,
    /// Into the committer; bounded, so a flood of sends waits here.
    commits: mpsc::Sender<Commit>,
}

impl Chat {
    /// Starts the committer; it ends when the last `Chat` handle is dropped.
    pub fn start(store: Arc<dyn Store>, broker: Arc<dyn Broker>, config: &Config) -> Arc<Self> {
        let (commits, rx) = mpsc::channel(config.max_batch * 4);
        tokio::spawn(commit_loop(store.clone(), broker, rx, config.max_batch));
        Arc::new(Self {
            store,
            limits: config.limits.clone(),
            sync_page: config.sync_page,
            members: RwLock::default(),
            commits,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Validates a send and queues it for commit. The ack (or an error) is
    /// pushed to `sender`'s outbox by the committer.
    pub async fn send(
        &self,
        sender: &Arc<Connection>,
        request_id: Option<String>,
        send: SendMessage,
    ) -> Result<(), Refusal> {
        let content_type = send.content_type.unwrap_or_else(|| "text".to_string());
        self.limits.check(
            &send.content,
            &content_type,
            send.client_message_id.as_deref(),
        )?;
        let conversation = ConversationId::try_from(send.conversation_id.as_str())
            .map_err(|_| Refusal::new(ErrorCode::NotFound, "conversation not found"))?;
        let members = self.members(&conversation).await?;
        if !members.set.contains(&sender.user) {
            return Err(Refusal::new(
                ErrorCode::Unauthorized,
                "not a participant of this conversation",
            ));
        }
        let message = NewMessage {
            id: MessageId::new_unchecked(uuid::Uuid::now_v7().to_string()),
            conversation,
            sender: sender.user.clone(),
            content: send.content,
            content_type,
            client_message_id: send.client_message_id,
            sent_at: time::now_ms(),
        };
        let commit = Commit::Send {
            message,
            audience: members.list.clone(),
            sender: sender.clone(),
            request_id,
        };
        self.commits
            .send(commit)
            .await
            .map_err(|_| Refusal::new(ErrorCode::InternalError, "server is shutting down"))
    }

    /// Waits until every send queued so far is committed and acked.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commits.send(Commit::Barrier(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Replays one page of what the connection's user missed, then
    /// `sync_complete`.
    pub async fn sync(
        &self,
        conn: &Connection,
        request_id: Option<String>,
        request: SyncRequest,
    ) -> Result<(), Refusal> {
        let mut cursors = BTreeMap::new();
        for (id, seq) in request.cursors.unwrap_or_default() {
            let id = ConversationId::try_from(id.as_str()).map_err(|e| {
                Refusal::new(ErrorCode::InvalidMessage, format!("cursor {id:?}: {e}"))
            })?;
            cursors.insert(id, seq.max(0));
        }
        let after_message = match request.last_message_id {
            Some(id) => Some(
                MessageId::try_from(id.as_str())
                    .map_err(|_| Refusal::new(ErrorCode::NotFound, "message not found"))?,
            ),
            None => None,
        };
        let page = self
            .store
            .sync(SyncQuery {
                user: conn.user.clone(),
                cursors,
                after_message,
                limit: self.sync_page,
            })
            .await?;
        for message in &page.messages {
            let frame = ServerFrame::NewMessage {
                message: wire(message),
                replay: true,
            };
            if conn.outbox.push_when_room(json(&frame)).await.is_err() {
                return Ok(()); // the connection is closing
            }
        }
        let done = ServerFrame::SyncComplete {
            cursors: page
                .cursors
                .into_iter()
                .map(|(c, seq)| (c.to_string(), seq))
                .collect(),
            has_more: page.has_more,
            request_id,
        };
        let _ = conn.outbox.push_when_room(json(&done)).await;
        Ok(())
    }

    async fn members(&self, conversation: &ConversationId) -> Result<Arc<Members>, Refusal> {
        if let Some(m) = self.read_cache().get(conversation) {
            return Ok(m.clone());
        }
        let info = self
            .store
            .conversation(conversation)
            .await?
            .ok_or_else(|| Refusal::new(ErrorCode::NotFound, "conversation not found"))?;
        let members = Arc::new(Members {
            set: info.members.iter().cloned().collect(),
            list: info.members.into(),
        });
        self.members
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(conversation.clone(), members.clone());
        Ok(members)
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ConversationId, Arc<Members>>> {
        self.members.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The one place sends are committed: batch, commit, then publish and ack in
/// commit order.
async fn commit_loop(
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    mut rx: mpsc::Receiver<Commit>,
    max_batch: usize,
) {
    let mut waiting = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut waiting, max_batch).await > 0 {
        let mut sends = Vec::with_capacity(waiting.len());
        let mut barriers = Vec::new();
        for commit in waiting.drain(..) {
            match commit {
                Commit::Send {
                    message,
                    audience,
                    sender,
                    request_id,
                } => sends.push((message, (audience, sender, request_id))),
                Commit::Barrier(done) => barriers.push(done),
            }
        }
        if !sends.is_empty() {
            let (batch, replies): (Vec<_>, Vec<_>) = sends.into_iter().unzip();
            let results = store.append(batch).await;
            for (i, (audience, sender, request_id)) in replies.into_iter().enumerate() {
                let result = match &results {
                    Ok(results) => results
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| Err(StoreError::Unavailable("short batch".into()))),
                    Err(e) => Err(e.clone()),
                };
                match result {
                    Ok(appended) => {
                        if !appended.duplicate {
                            broker.publish(Event {
                                audience,
                                except_session: Some(sender.session),
                                kind: EventKind::Durable,
                                payload: json(&ServerFrame::NewMessage {
                                    message: wire(&appended.message),
                                    replay: false,
                                }),
                            });
                        }
                        let m = appended.message;
                        let ack = ServerFrame::MessageSent {
                            message_id: m.id.to_string(),
                            conversation_id: m.conversation.to_string(),
                            seq: m.seq,
                            sent_at: time::iso8601(m.sent_at),
                            client_message_id: m.client_message_id,
                            duplicate: appended.duplicate,
                            request_id,
                        };
                        let _ = sender
                            .outbox
                            .push(Outgoing::Text(json(&ack)), EventKind::Durable);
                    }
                    Err(e) => {
                        let refusal = Refusal::from(e);
                        let _ = sender.outbox.push(
                            Outgoing::Text(error_frame(refusal.code, &refusal.message, request_id)),
                            EventKind::Durable,
                        );
                    }
                }
            }
        }
        for done in barriers {
            let _ = done.send(());
        }
    }
}

/// A stored message as the wire shows it.
pub fn wire(m: &StoredMessage) -> WireMessage {
    WireMessage {
        id: m.id.to_string(),
        conversation_id: m.conversation.to_string(),
        sender: m.sender.to_string(),
        content: m.content.clone(),
        content_type: m.content_type.clone(),
        seq: m.seq,
        sent_at: time::iso8601(m.sent_at),
        client_message_id: m.client_message_id.clone(),
    }
}

pub fn json(frame: &ServerFrame) -> Bytes {
    Bytes::from(frame.to_json())
}

pub fn error_frame(code: ErrorCode, message: &str, request_id: Option<String>) -> Bytes {
    json(&ServerFrame::Error {
        code,
        message: message.to_string(),
        request_id,
    })
}
