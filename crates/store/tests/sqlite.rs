//! The SQLite store against real database files.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use natter_core::{
    ConversationId, MessageId, NewMessage, StoredMessage, UserId,
    store::{
        ConversationSummary, ImportData, ImportReport, NewConversation, NewUser, Store, StoreError,
        SyncPage, SyncQuery,
    },
};
use natter_store::{SqliteConfig, SqliteStore, Synchronous};
use tempfile::TempDir;

fn uid(s: &str) -> UserId {
    UserId::try_from(s).expect("valid user id")
}

fn cid(s: &str) -> ConversationId {
    ConversationId::try_from(s).expect("valid conversation id")
}

fn msg(conv: &str, sender: &str, content: &str, client_id: Option<&str>) -> NewMessage {
    NewMessage {
        id: MessageId::new_unchecked(uuid::Uuid::now_v7().to_string()),
        conversation: cid(conv),
        sender: uid(sender),
        content: content.to_owned(),
        content_type: "text".to_owned(),
        client_message_id: client_id.map(str::to_owned),
        sent_at: natter_core::time::now_ms(),
    }
}

fn new_user(id: &str) -> NewUser {
    NewUser {
        id: uid(id),
        name: Some(format!("User {id}")),
    }
}

fn new_conv(id: &str, members: &[&str]) -> NewConversation {
    NewConversation {
        id: cid(id),
        title: Some(format!("Room {id}")),
        members: members.iter().map(|m| uid(m)).collect(),
    }
}

async fn open(dir: &TempDir) -> SqliteStore {
    let config = SqliteConfig::new(dir.path().join("natter.db"));
    SqliteStore::open(config).await.expect("open store")
}

/// A store with users a, b, c; conversation "ab" (a, b), "ac" (a, c), "bc" (b, c).
async fn fixture() -> (TempDir, SqliteStore) {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir).await;
    for u in ["a", "b", "c"] {
        store.add_user(new_user(u)).await.expect("add user");
    }
    for (id, members) in [("ab", ["a", "b"]), ("ac", ["a", "c"]), ("bc", ["b", "c"])] {
        store
            .create_conversation(new_conv(id, &members))
            .await
            .expect("create conversation");
    }
    (dir, store)
}

/// Appends `n` messages to `conv` one batch at a time; returns their seqs.
async fn send_many(store: &SqliteStore, conv: &str, sender: &str, n: usize) -> Vec<i64> {
    let batch = (0..n)
        .map(|i| msg(conv, sender, &format!("m{i}"), None))
        .collect();
    store
        .append(batch)
        .await
        .expect("append")
        .into_iter()
        .map(|r| r.expect("appended").message.seq)
        .collect()
}

async fn sync(store: &SqliteStore, user: &str, cursors: &[(&str, i64)], limit: usize) -> SyncPage {
    let query = SyncQuery {
        user: uid(user),
        cursors: cursors.iter().map(|(c, s)| (cid(c), *s)).collect(),
        after_message: None,
        limit,
    };
    store.sync(query).await.expect("sync")
}

/// Counts rows straight from the file, to check what is really stored.
fn count(dir: &TempDir, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(dir.path().join("natter.db")).expect("open");
    conn.query_row(sql, [], |r| r.get(0)).expect("count")
}

#[tokio::test]
async fn migrations_apply_and_data_survives_reopen() {
    let (dir, store) = fixture().await;
    let sent = store
        .append(vec![msg("ab", "a", "hello", Some("c1"))])
        .await
        .expect("append");
    let sent = sent[0].clone().expect("appended").message;
    store.close().await;

    for _ in 0..2 {
        let store = open(&dir).await;
        assert!(store.user(&uid("a")).await.expect("user").is_some());
        let info = store
            .conversation(&cid("ab"))
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(info.last_seq, 1);
        let page = sync(&store, "b", &[], 10).await;
        assert_eq!(page.messages, vec![sent.clone()]);
        store.close().await;
    }
    assert_eq!(count(&dir, "SELECT count(*) FROM schema_migrations"), 4);
    assert_eq!(count(&dir, "SELECT max(version) FROM schema_migrations"), 4);
}

/// A retried send is looked up by its client id through the index, never by
/// scanning the conversation's messages.
#[tokio::test]
async fn a_retry_is_found_through_the_client_id_index() {
    let (dir, store) = fixture().await;
    store.close().await;
    let conn = rusqlite::Connection::open(dir.path().join("natter.db")).expect("open");
    let plan: String = conn
        .query_row(
            "EXPLAIN QUERY PLAN SELECT id FROM messages
             WHERE conversation_id = ?1 AND sender = ?2 AND client_message_id = ?3",
            ["ab", "a", "c1"],
            |r| r.get(3),
        )
        .expect("plan");
    assert!(plan.contains("USING INDEX messages_by_client_id"), "{plan}");
}

#[tokio::test]
async fn open_creates_file_and_accepts_every_synchronous_mode() {
    let dir = TempDir::new().expect("tempdir");
    for (i, sync) in [Synchronous::Off, Synchronous::Normal, Synchronous::Full]
        .into_iter()
        .enumerate()
    {
        let path = dir.path().join(format!("db{i}.sqlite"));
        let config = SqliteConfig {
            path: path.clone(),
            synchronous: sync,
            read_connections: 0,
        };
        let store = SqliteStore::open(config).await.expect("open");
        store.ping().await.expect("ping");
        store.close().await;
        assert!(path.exists());
    }
}

#[tokio::test]
async fn append_assigns_gapless_seq_across_batches() {
    let (_dir, store) = fixture().await;
    let mut seqs = Vec::new();
    for n in [1, 5, 17, 3] {
        seqs.extend(send_many(&store, "ab", "a", n).await);
    }
    assert_eq!(seqs, (1..=26).collect::<Vec<i64>>());
    // Another conversation counts on its own.
    assert_eq!(send_many(&store, "ac", "c", 2).await, vec![1, 2]);
    let info = store
        .conversation(&cid("ab"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(info.last_seq, 26);
}

#[tokio::test]
async fn seq_continues_from_the_database_after_reopen() {
    // The writer remembers each conversation's last seq; a new store
    // remembers nothing and must read where the last one stopped.
    let (dir, store) = fixture().await;
    assert_eq!(send_many(&store, "ab", "a", 3).await, vec![1, 2, 3]);
    store.close().await;
    let store = open(&dir).await;
    assert_eq!(send_many(&store, "ab", "b", 2).await, vec![4, 5]);
    let info = store
        .conversation(&cid("ab"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(info.last_seq, 5);
    store.close().await;
}

#[tokio::test]
async fn concurrent_appends_get_every_seq_once() {
    let (dir, store) = fixture().await;
    let store = Arc::new(store);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for _ in 0..10 {
                    seqs.extend(send_many(&store, "ab", "b", 5).await);
                }
                seqs
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let seqs = task.await.expect("task");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "each caller's seqs increase"
        );
        all.extend(seqs);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1000).collect::<Vec<i64>>());
    assert_eq!(count(&dir, "SELECT count(*) FROM messages"), 1000);
}

#[tokio::test]
async fn same_client_message_id_is_stored_once() {
    let (dir, store) = fixture().await;
    let first = store
        .append(vec![msg("ab", "a", "hi", Some("k1"))])
        .await
        .expect("append");
    let first = first[0].clone().expect("appended");
    assert!(!first.duplicate);

    let again = store
        .append(vec![msg("ab", "a", "hi (retry)", Some("k1"))])
        .await
        .expect("append");
    let again = again[0].clone().expect("appended");
    assert!(again.duplicate);
    assert_eq!(
        again.message, first.message,
        "the stored message, not the retry"
    );

    // The same key from another sender, or in another conversation, is new.
    let other = store
        .append(vec![
            msg("ab", "b", "hi", Some("k1")),
            msg("ac", "a", "hi", Some("k1")),
        ])
        .await
        .expect("append");
    assert!(
        other
            .iter()
            .all(|r| !r.as_ref().expect("appended").duplicate)
    );
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM messages WHERE client_message_id = 'k1'"
        ),
        3
    );
    assert_eq!(
        count(
            &dir,
            "SELECT max(seq) FROM messages WHERE conversation_id = 'ab'"
        ),
        2
    );
}

#[tokio::test]
async fn duplicate_inside_one_batch_is_found() {
    let (dir, store) = fixture().await;
    let out = store
        .append(vec![
            msg("ab", "a", "one", Some("k")),
            msg("ab", "a", "plain", None),
            msg("ab", "a", "one again", Some("k")),
        ])
        .await
        .expect("append");
    let out: Vec<_> = out.into_iter().map(|r| r.expect("appended")).collect();
    assert_eq!(
        out.iter().map(|a| a.duplicate).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(out[2].message, out[0].message);
    assert_eq!(out[1].message.seq, 2);
    assert_eq!(count(&dir, "SELECT count(*) FROM messages"), 2);
}

#[tokio::test]
async fn missing_conversation_fails_alone() {
    let (dir, store) = fixture().await;
    let out = store
        .append(vec![
            msg("ab", "a", "1", None),
            msg("nowhere", "a", "2", None),
            msg("ab", "a", "3", None),
        ])
        .await
        .expect("the batch commits");
    assert_eq!(out[0].as_ref().map(|a| a.message.seq), Ok(1));
    assert_eq!(
        out[1],
        Err(StoreError::NotFound("conversation nowhere".into()))
    );
    assert_eq!(out[2].as_ref().map(|a| a.message.seq), Ok(2));
    assert_eq!(count(&dir, "SELECT count(*) FROM messages"), 2);
}

#[tokio::test]
async fn unknown_sender_fails_alone_without_a_gap() {
    let (_dir, store) = fixture().await;
    let out = store
        .append(vec![
            msg("ab", "ghost", "1", None),
            msg("ab", "a", "2", None),
        ])
        .await
        .expect("the batch commits");
    assert_eq!(out[0], Err(StoreError::UnknownUser(uid("ghost"))));
    assert_eq!(out[1].as_ref().map(|a| a.message.seq), Ok(1));
}

#[tokio::test]
async fn content_round_trips_byte_exact() {
    let (_dir, store) = fixture().await;
    let contents = [
        "emoji 👩‍👩‍👧‍👦🎉 and combining e\u{301}",
        "עברית ومرحبا بالعالم \u{202E}RTL override",
        "nul \0 inside \0\0 and at the end\0",
        "'); DROP TABLE messages; --",
        "Robert'); DELETE FROM users WHERE ('1'='1",
        "%_ LIKE \\ escapes \" ` $1 ?1 :name @x",
    ];
    let batch = contents
        .iter()
        .map(|c| msg("ab", "a", c, Some(c)))
        .collect();
    let out = store.append(batch).await.expect("append");
    for (sent, content) in out.iter().zip(contents) {
        assert_eq!(sent.as_ref().expect("appended").message.content, content);
    }
    let page = sync(&store, "b", &[], 100).await;
    let read: Vec<&str> = page.messages.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(read, contents);
    for m in &page.messages {
        assert_eq!(m.client_message_id.as_deref(), Some(m.content.as_str()));
    }
    // Retrying with the same odd key finds the stored message.
    let retry = store
        .append(vec![msg("ab", "a", "x", Some(contents[2]))])
        .await
        .expect("append");
    assert!(retry[0].as_ref().expect("appended").duplicate);
    assert_eq!(
        store.user(&uid("a")).await.expect("user").map(|u| u.name),
        Some(Some("User a".into()))
    );
}

#[tokio::test]
async fn sync_from_cursors() {
    let (_dir, store) = fixture().await;
    send_many(&store, "ab", "b", 5).await;
    send_many(&store, "ac", "c", 3).await;
    send_many(&store, "bc", "c", 4).await;

    let page = sync(&store, "a", &[("ab", 3)], 100).await;
    let got: Vec<(&str, i64)> = page
        .messages
        .iter()
        .map(|m| (&*m.conversation, m.seq))
        .collect();
    assert_eq!(got, [("ab", 4), ("ab", 5), ("ac", 1), ("ac", 2), ("ac", 3)]);
    assert_eq!(
        page.cursors,
        BTreeMap::from([(cid("ab"), 5), (cid("ac"), 3)])
    );
    assert!(!page.has_more);

    // Up to date: nothing, same cursors.
    let page = sync(&store, "a", &[("ab", 5), ("ac", 3)], 100).await;
    assert!(page.messages.is_empty());
    assert_eq!(
        page.cursors,
        BTreeMap::from([(cid("ab"), 5), (cid("ac"), 3)])
    );
}

#[tokio::test]
async fn sync_after_message() {
    let (_dir, store) = fixture().await;
    send_many(&store, "ab", "b", 2).await; // ab 1, 2
    let mark = store
        .append(vec![msg("ac", "c", "mark", None)])
        .await
        .expect("append");
    let mark = mark[0].as_ref().expect("appended").message.id.clone(); // ac 1
    send_many(&store, "ab", "b", 2).await; // ab 3, 4
    send_many(&store, "ac", "c", 1).await; // ac 2

    let query = SyncQuery {
        user: uid("a"),
        cursors: BTreeMap::from([(cid("ac"), 0)]),
        after_message: Some(mark.clone()),
        limit: 100,
    };
    let page = store.sync(query).await.expect("sync");
    let got: Vec<(&str, i64)> = page
        .messages
        .iter()
        .map(|m| (&*m.conversation, m.seq))
        .collect();
    // ab: everything committed after the mark; ac: its cursor wins.
    assert_eq!(got, [("ab", 3), ("ab", 4), ("ac", 1), ("ac", 2)]);
    assert_eq!(
        page.cursors,
        BTreeMap::from([(cid("ab"), 4), (cid("ac"), 2)])
    );
}

#[tokio::test]
async fn sync_after_unknown_or_foreign_message_is_not_found() {
    let (_dir, store) = fixture().await;
    let foreign = store
        .append(vec![msg("bc", "b", "secret", None)])
        .await
        .expect("append");
    let foreign = foreign[0].as_ref().expect("appended").message.id.clone();
    for id in [MessageId::new_unchecked("no-such-message"), foreign] {
        let query = SyncQuery {
            user: uid("a"),
            cursors: BTreeMap::new(),
            after_message: Some(id.clone()),
            limit: 10,
        };
        assert_eq!(
            store.sync(query).await,
            Err(StoreError::NotFound(format!("message {id}")))
        );
    }
}

#[tokio::test]
async fn sync_pages_through_everything_once() {
    let (_dir, store) = fixture().await;
    for _ in 0..6 {
        send_many(&store, "ab", "b", 100).await;
        send_many(&store, "ac", "c", 100).await;
    }
    let mut cursors = BTreeMap::new();
    let mut seen = Vec::new();
    let mut shape = Vec::new();
    loop {
        let query = SyncQuery {
            user: uid("a"),
            cursors: cursors.clone(),
            after_message: None,
            limit: 500,
        };
        let page = store.sync(query).await.expect("sync");
        shape.push((page.messages.len(), page.has_more));
        seen.extend(
            page.messages
                .iter()
                .map(|m| (m.conversation.clone(), m.seq)),
        );
        cursors = page.cursors;
        if !page.has_more {
            break;
        }
    }
    assert_eq!(shape, [(500, true), (500, true), (200, false)]);
    let expected: Vec<_> = ["ab", "ac"]
        .into_iter()
        .flat_map(|c| (1..=600).map(move |s| (cid(c), s)))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(
        cursors,
        BTreeMap::from([(cid("ab"), 600), (cid("ac"), 600)])
    );
}

#[tokio::test]
async fn sync_cut_keeps_cursors_of_unreached_conversations() {
    let (_dir, store) = fixture().await;
    send_many(&store, "ab", "b", 10).await;
    send_many(&store, "ac", "c", 10).await;
    let page = sync(&store, "a", &[("ac", 4)], 7).await;
    assert_eq!(page.messages.len(), 7);
    assert!(page.has_more);
    assert_eq!(
        page.cursors,
        BTreeMap::from([(cid("ab"), 7), (cid("ac"), 4)])
    );

    let page = sync(&store, "a", &[], 0).await;
    assert!(page.messages.is_empty() && page.has_more);
    assert_eq!(
        page.cursors,
        BTreeMap::from([(cid("ab"), 0), (cid("ac"), 0)])
    );
}

#[tokio::test]
async fn sync_never_returns_other_conversations() {
    let (_dir, store) = fixture().await;
    send_many(&store, "bc", "b", 3).await;
    send_many(&store, "ab", "b", 1).await;
    let page = sync(&store, "a", &[("bc", 0), ("nowhere", 0)], 100).await;
    assert!(page.messages.iter().all(|m| &*m.conversation != "bc"));
    assert_eq!(page.messages.len(), 1);
    assert_eq!(
        page.cursors,
        BTreeMap::from([(cid("ab"), 1), (cid("ac"), 0)])
    );

    let stranger = sync(&store, "nobody", &[("ab", 0)], 100).await;
    assert!(stranger.messages.is_empty() && stranger.cursors.is_empty() && !stranger.has_more);
}

fn import_data() -> ImportData {
    ImportData {
        users: vec![new_user("u1"), new_user("u2"), new_user("u3")],
        conversations: vec![
            new_conv("r1", &["u1", "u2"]),
            new_conv("r2", &["u2", "u3", "u2"]),
        ],
    }
}

#[tokio::test]
async fn import_is_idempotent() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir).await;
    let first = store.import(import_data()).await.expect("import");
    assert_eq!(
        first,
        ImportReport {
            users_created: 3,
            conversations_created: 2,
            members_added: 4
        }
    );
    let second = store.import(import_data()).await.expect("import again");
    assert_eq!(second, ImportReport::default());

    // A later file adds what is missing and keeps what exists.
    let more = ImportData {
        users: vec![
            NewUser {
                id: uid("u1"),
                name: Some("renamed".into()),
            },
            new_user("u4"),
        ],
        conversations: vec![new_conv("r1", &["u4"])],
    };
    let third = store.import(more).await.expect("import more");
    assert_eq!(
        third,
        ImportReport {
            users_created: 1,
            conversations_created: 0,
            members_added: 1
        }
    );
    let u1 = store.user(&uid("u1")).await.expect("user").expect("exists");
    assert_eq!(u1.name.as_deref(), Some("User u1"));
    let r1 = store
        .conversation(&cid("r1"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(r1.members, [uid("u1"), uid("u2"), uid("u4")]);
}

#[tokio::test]
async fn import_with_unknown_participant_changes_nothing() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir).await;
    let mut data = import_data();
    data.conversations.push(new_conv("r3", &["u1", "ghost"]));
    assert_eq!(
        store.import(data).await,
        Err(StoreError::Invalid(
            "conversation r3: unknown participant ghost".into()
        ))
    );
    for u in ["u1", "u2", "u3"] {
        assert_eq!(store.user(&uid(u)).await, Ok(None));
    }
    assert_eq!(store.conversation(&cid("r1")).await, Ok(None));
}

#[tokio::test]
async fn import_refuses_contradicting_repeats() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir).await;
    let same_twice = ImportData {
        users: vec![new_user("u1"), new_user("u1")],
        conversations: vec![],
    };
    assert_eq!(
        store.import(same_twice).await.map(|r| r.users_created),
        Ok(1)
    );
    let renamed = ImportData {
        users: vec![
            new_user("u2"),
            NewUser {
                id: uid("u2"),
                name: None,
            },
        ],
        conversations: vec![],
    };
    assert!(
        matches!(store.import(renamed).await, Err(StoreError::Invalid(m)) if m.starts_with("user u2"))
    );
    assert_eq!(store.user(&uid("u2")).await, Ok(None));
}

#[tokio::test]
async fn import_ten_thousand_users() {
    let dir = TempDir::new().expect("tempdir");
    let store = open(&dir).await;
    let users: Vec<NewUser> = (0..10_000).map(|i| new_user(&format!("user{i}"))).collect();
    let members: Vec<UserId> = users.iter().take(1000).map(|u| u.id.clone()).collect();
    let data = ImportData {
        users,
        conversations: vec![NewConversation {
            id: cid("big"),
            title: None,
            members,
        }],
    };
    let started = Instant::now();
    let report = store.import(data).await.expect("import");
    let took = started.elapsed();
    assert_eq!(
        report,
        ImportReport {
            users_created: 10_000,
            conversations_created: 1,
            members_added: 1000
        }
    );
    assert!(took.as_secs_f64() < 1.0, "10,000 users took {took:?}");
    assert_eq!(
        store.conversations_of(&uid("user999")).await,
        Ok(vec![cid("big")])
    );
}

#[tokio::test]
async fn users_and_conversations() {
    let (_dir, store) = fixture().await;
    assert_eq!(
        store.add_user(new_user("a")).await,
        Err(StoreError::Conflict("user a".into()))
    );
    assert_eq!(
        store
            .create_conversation(new_conv("zz", &["a", "ghost"]))
            .await,
        Err(StoreError::UnknownUser(uid("ghost")))
    );
    assert_eq!(
        store.conversation(&cid("zz")).await,
        Ok(None),
        "rolled back"
    );
    assert_eq!(
        store.create_conversation(new_conv("ab", &["a"])).await,
        Err(StoreError::Conflict("conversation ab".into()))
    );
    let info = store
        .create_conversation(new_conv("abc", &["c", "a", "b", "a"]))
        .await
        .expect("create");
    assert_eq!(info.members, [uid("a"), uid("b"), uid("c")]);
    assert_eq!(store.conversation(&cid("abc")).await, Ok(Some(info)));
    assert_eq!(
        store.conversations_of(&uid("a")).await,
        Ok(vec![cid("ab"), cid("abc"), cid("ac")])
    );

    store.set_last_seen(&uid("a"), 1234).await.expect("set");
    let a = store.user(&uid("a")).await.expect("user").expect("exists");
    assert_eq!(
        (a.name.as_deref(), a.last_seen),
        (Some("User a"), Some(1234))
    );
    assert_eq!(
        store.set_last_seen(&uid("ghost"), 1).await,
        Err(StoreError::NotFound("user ghost".into()))
    );
    assert_eq!(store.user(&uid("ghost")).await, Ok(None));
}

#[tokio::test]
async fn calls_after_close_are_unavailable() {
    let (_dir, store) = fixture().await;
    store.close().await;
    let closed = StoreError::Unavailable("store closed".into());
    assert_eq!(store.ping().await, Err(closed.clone()));
    assert_eq!(store.user(&uid("a")).await, Err(closed.clone()));
    assert_eq!(store.add_user(new_user("z")).await, Err(closed.clone()));
    assert_eq!(
        store.append(vec![msg("ab", "a", "x", None)]).await,
        Err(closed.clone())
    );
    assert_eq!(store.sync(query_all("a")).await, Err(closed.clone()));
    assert_eq!(store.import(import_data()).await, Err(closed.clone()));
    assert_eq!(store.contacts_of(&uid("a"), 100).await, Err(closed.clone()));
    assert_eq!(
        store.history(&cid("ab"), None, 10).await,
        Err(closed.clone())
    );
    assert_eq!(
        store
            .advance_delivered(vec![(cid("ab"), uid("a"), 1)])
            .await,
        Err(closed.clone())
    );
    assert_eq!(
        store.mark_read(&cid("ab"), &uid("a"), 1).await,
        Err(closed.clone())
    );
    assert_eq!(store.add_member(&cid("ab"), &uid("c")).await, Err(closed));
    store.close().await; // closing twice is harmless
}

fn query_all(user: &str) -> SyncQuery {
    SyncQuery {
        user: uid(user),
        cursors: BTreeMap::new(),
        after_message: None,
        limit: usize::MAX,
    }
}

#[tokio::test]
async fn close_lets_queued_writes_finish() {
    let (dir, store) = fixture().await;
    let store = Arc::new(store);
    let sends: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.append(vec![msg("ab", "a", "x", None)]).await })
        })
        .collect();
    tokio::task::yield_now().await;
    store.close().await;
    let mut committed = 0;
    for send in sends {
        if send.await.expect("task").is_ok() {
            committed += 1;
        }
    }
    assert_eq!(count(&dir, "SELECT count(*) FROM messages"), committed);
}

/// Appends one message with a chosen `sent_at`; returns it as stored.
async fn send_at(store: &SqliteStore, conv: &str, sender: &str, sent_at: i64) -> StoredMessage {
    let mut m = msg(conv, sender, &format!("at {sent_at}"), None);
    m.sent_at = sent_at;
    let out = store.append(vec![m]).await.expect("append");
    out[0].clone().expect("appended").message
}

async fn summaries(store: &SqliteStore, user: &str) -> Vec<ConversationSummary> {
    store
        .conversation_summaries(&uid(user))
        .await
        .expect("summaries")
}

/// `(conversation, read_seq, unread)` of each summary, in order.
fn unread_shape(list: &[ConversationSummary]) -> Vec<(String, i64, i64)> {
    list.iter()
        .map(|s| (s.conversation.id.to_string(), s.read_seq, s.unread))
        .collect()
}

async fn delivered(store: &SqliteStore, keys: &[(&str, &str)]) -> Vec<i64> {
    let keys = keys.iter().map(|(c, u)| (cid(c), uid(u))).collect();
    store.delivered_watermarks(keys).await.expect("watermarks")
}

async fn advance(store: &SqliteStore, updates: &[(&str, &str, i64)]) -> Vec<i64> {
    let updates = updates
        .iter()
        .map(|(c, u, s)| (cid(c), uid(u), *s))
        .collect();
    store.advance_delivered(updates).await.expect("advance")
}

#[tokio::test]
async fn contacts_of_lists_co_members_once() {
    let (_dir, store) = fixture().await;
    for u in ["d", "e"] {
        store.add_user(new_user(u)).await.expect("add user");
    }
    // b shares ab and abc with a, c shares ac and abc: each is listed once.
    store
        .create_conversation(new_conv("abc", &["a", "b", "c"]))
        .await
        .expect("create");
    // e is alone in a conversation: no contacts, and no one has e.
    store
        .create_conversation(new_conv("solo", &["e"]))
        .await
        .expect("create");
    store.set_last_seen(&uid("b"), 4242).await.expect("seen");

    let contacts = store.contacts_of(&uid("a"), 100).await.expect("contacts");
    let b = store.user(&uid("b")).await.expect("user").expect("exists");
    let c = store.user(&uid("c")).await.expect("user").expect("exists");
    assert_eq!(contacts, [b.clone(), c]);
    assert_eq!(contacts[0].last_seen, Some(4242));
    assert_eq!(contacts[0].name.as_deref(), Some("User b"));
    assert_eq!(contacts[1].last_seen, None);

    let of_c: Vec<UserId> = store
        .contacts_of(&uid("c"), 100)
        .await
        .expect("contacts")
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(of_c, [uid("a"), uid("b")]);
    for lonely in ["d", "e", "ghost"] {
        assert_eq!(store.contacts_of(&uid(lonely), 100).await, Ok(vec![]));
    }
    // Conversations over the size limit make no contacts: with at most two
    // members, c knows a and b only through the pairs ac and bc.
    let small_only: Vec<UserId> = store
        .contacts_of(&uid("c"), 2)
        .await
        .expect("contacts")
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(small_only, [uid("a"), uid("b")]);
    store.add_user(new_user("f")).await.expect("add user");
    store
        .create_conversation(new_conv("big", &["a", "b", "c", "f"]))
        .await
        .expect("create");
    let of_f = store.contacts_of(&uid("f"), 3).await.expect("contacts");
    assert!(of_f.is_empty(), "f shares only a four-member conversation");
    assert_eq!(
        store
            .contacts_of(&uid("f"), 4)
            .await
            .expect("contacts")
            .len(),
        3
    );
}

#[tokio::test]
async fn message_by_id() {
    let (_dir, store) = fixture().await;
    let sent = store
        .append(vec![
            msg("ab", "a", "first", Some("k1")),
            msg("ac", "c", "second", None),
        ])
        .await
        .expect("append");
    for sent in sent {
        let sent = sent.expect("appended").message;
        assert_eq!(store.message(&sent.id).await, Ok(Some(sent)));
    }
    assert_eq!(
        store
            .message(&MessageId::new_unchecked("no-such-message"))
            .await,
        Ok(None)
    );
}

#[tokio::test]
async fn delivered_watermarks_only_rise_and_persist() {
    let (dir, store) = fixture().await;
    // Members start at 0; a non-membership reads 0 too.
    let keys = [
        ("ab", "a"),
        ("ab", "b"),
        ("bc", "b"),
        ("ac", "b"),
        ("nowhere", "a"),
    ];
    assert_eq!(delivered(&store, &keys).await, [0, 0, 0, 0, 0]);
    assert_eq!(advance(&store, &[]).await, Vec::<i64>::new());
    assert_eq!(delivered(&store, &[]).await, Vec::<i64>::new());

    // Previous values are returned; non-members report i64::MAX.
    let before = advance(
        &store,
        &[
            ("ab", "a", 3),
            ("ac", "b", 7),
            ("ab", "b", 5),
            ("nowhere", "a", 1),
            ("bc", "b", 2),
        ],
    )
    .await;
    assert_eq!(before, [0, i64::MAX, 0, i64::MAX, 0]);
    assert_eq!(delivered(&store, &keys).await, [3, 5, 2, 0, 0]);
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM members WHERE conversation_id = 'ac' AND user_id = 'b'"
        ),
        0,
        "a non-member is not made one"
    );

    // Never lowered; the same pair twice in one call sees the first raise.
    assert_eq!(
        advance(&store, &[("ab", "a", 1), ("ab", "b", 5)]).await,
        [3, 5]
    );
    assert_eq!(
        advance(&store, &[("ab", "a", 10), ("ab", "a", 8), ("ab", "a", 12)]).await,
        [3, 10, 10]
    );
    assert_eq!(delivered(&store, &keys).await, [12, 5, 2, 0, 0]);

    // Delivered and read are separate watermarks.
    assert_eq!(unread_shape(&summaries(&store, "a").await)[0].1, 0);
    store.close().await;

    let store = open(&dir).await;
    assert_eq!(delivered(&store, &keys).await, [12, 5, 2, 0, 0]);
    assert_eq!(advance(&store, &[("ab", "a", 13)]).await, [12]);
}

#[tokio::test]
async fn mark_read_only_rises() {
    let (dir, store) = fixture().await;
    send_many(&store, "ab", "b", 6).await;
    let read_seq = |list: Vec<ConversationSummary>| {
        list.into_iter()
            .find(|s| &*s.conversation.id == "ab")
            .map(|s| s.read_seq)
    };
    assert_eq!(store.mark_read(&cid("ab"), &uid("a"), 4).await, Ok(0));
    assert_eq!(read_seq(summaries(&store, "a").await), Some(4));
    assert_eq!(store.mark_read(&cid("ab"), &uid("a"), 2).await, Ok(4));
    assert_eq!(store.mark_read(&cid("ab"), &uid("a"), 4).await, Ok(4));
    assert_eq!(read_seq(summaries(&store, "a").await), Some(4));
    assert_eq!(store.mark_read(&cid("ab"), &uid("a"), 6).await, Ok(4));
    assert_eq!(read_seq(summaries(&store, "a").await), Some(6));
    // The other member's watermark, and the delivered one, are untouched.
    assert_eq!(read_seq(summaries(&store, "b").await), Some(0));
    assert_eq!(delivered(&store, &[("ab", "a")]).await, [0]);

    assert_eq!(
        store.mark_read(&cid("bc"), &uid("a"), 1).await,
        Err(StoreError::NotFound("member a of conversation bc".into()))
    );
    assert_eq!(
        store.mark_read(&cid("nowhere"), &uid("a"), 1).await,
        Err(StoreError::NotFound(
            "member a of conversation nowhere".into()
        ))
    );
    assert_eq!(
        count(&dir, "SELECT sum(read_seq) FROM members"),
        6,
        "only a's membership of ab was raised"
    );
}

#[tokio::test]
async fn conversation_summaries_most_recent_first_with_unread() {
    let (_dir, store) = fixture().await;
    store
        .create_conversation(new_conv("quiet", &["a", "b"]))
        .await
        .expect("create");
    // Far enough ahead of every created_at that the order is certain.
    let t = natter_core::time::now_ms() + 100_000;
    send_at(&store, "ab", "b", t + 1).await; // ab 1
    send_at(&store, "ab", "a", t + 2).await; // ab 2
    send_at(&store, "ac", "c", t + 3).await; // ac 1
    let ab_last = send_at(&store, "ab", "b", t + 4).await; // ab 3
    send_at(&store, "bc", "c", t + 9).await; // not a's

    let list = summaries(&store, "a").await;
    let ids: Vec<&str> = list.iter().map(|s| &*s.conversation.id).collect();
    assert_eq!(ids, ["ab", "ac", "quiet"]);
    assert_eq!(list[0].last_message, Some(ab_last.clone()));
    assert_eq!(list[0].conversation.last_seq, 3);
    assert_eq!(list[0].conversation.members, [uid("a"), uid("b")]);
    assert_eq!(
        list[0].conversation.title.as_deref(),
        Some("Room ab"),
        "the conversation as `conversation` reads it"
    );
    assert_eq!(
        Some(list[1].conversation.clone()),
        store.conversation(&cid("ac")).await.expect("read")
    );
    // A conversation without messages is listed, last, with nothing unread.
    assert_eq!(list[2].last_message, None);
    assert_eq!(list[2].conversation.last_seq, 0);
    // Own messages are never unread.
    assert_eq!(
        unread_shape(&list),
        [
            ("ab".into(), 0, 2),
            ("ac".into(), 0, 1),
            ("quiet".into(), 0, 0)
        ]
    );
    assert_eq!(
        unread_shape(&summaries(&store, "b").await),
        [
            ("bc".into(), 0, 1),
            ("ab".into(), 0, 1),
            ("quiet".into(), 0, 0)
        ]
    );

    // Read ones are not unread either: after seq 1 only b's seq 3 is left.
    store
        .mark_read(&cid("ab"), &uid("a"), 1)
        .await
        .expect("read");
    assert_eq!(
        unread_shape(&summaries(&store, "a").await)[0],
        ("ab".into(), 1, 1)
    );
    store
        .mark_read(&cid("ab"), &uid("a"), 3)
        .await
        .expect("read");
    store
        .mark_read(&cid("ac"), &uid("a"), 1)
        .await
        .expect("read");
    assert_eq!(
        unread_shape(&summaries(&store, "a").await),
        [
            ("ab".into(), 3, 0),
            ("ac".into(), 1, 0),
            ("quiet".into(), 0, 0)
        ]
    );

    // New activity moves a conversation to the top; a tie in time goes to
    // the later commit.
    let quiet_last = send_at(&store, "quiet", "b", t + 20).await;
    send_at(&store, "ac", "c", t + 20).await;
    let list = summaries(&store, "a").await;
    let ids: Vec<&str> = list.iter().map(|s| &*s.conversation.id).collect();
    assert_eq!(ids, ["ac", "quiet", "ab"]);
    assert_eq!(list[1].last_message, Some(quiet_last));
    assert_eq!(
        unread_shape(&list),
        [
            ("ac".into(), 1, 1),
            ("quiet".into(), 0, 1),
            ("ab".into(), 3, 0)
        ]
    );

    store.add_user(new_user("d")).await.expect("add user");
    assert_eq!(summaries(&store, "d").await, vec![]);
    assert_eq!(summaries(&store, "ghost").await, vec![]);
}

#[tokio::test]
async fn history_pages_newest_first() {
    let (_dir, store) = fixture().await;
    send_many(&store, "ab", "a", 12).await;
    send_many(&store, "ac", "c", 5).await;
    send_many(&store, "ab", "b", 13).await;

    let latest = store.history(&cid("ab"), None, 10).await.expect("history");
    let seqs: Vec<i64> = latest.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (16..=25).rev().collect::<Vec<_>>());
    assert!(latest.iter().all(|m| &*m.conversation == "ab"));
    assert_eq!(latest[0].sender, uid("b"));

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut before = None;
    loop {
        let page = store.history(&cid("ab"), before, 7).await.expect("history");
        if page.is_empty() {
            break;
        }
        sizes.push(page.len());
        before = page.last().map(|m| m.seq);
        seen.extend(page.into_iter().map(|m| m.seq));
    }
    assert_eq!(sizes, [7, 7, 7, 4]);
    assert_eq!(seen, (1..=25).rev().collect::<Vec<_>>());

    // Everything at once, and the message rows match what sync returns.
    let all = store.history(&cid("ab"), None, 200).await.expect("history");
    let mut synced = sync(&store, "a", &[("ac", 5)], 100).await.messages;
    synced.reverse();
    assert_eq!(all, synced);

    let ab = cid("ab");
    let history = |before, limit| store.history(&ab, before, limit);
    assert_eq!(history(Some(1), 10).await, Ok(vec![]));
    assert_eq!(history(Some(0), 10).await, Ok(vec![]));
    assert_eq!(history(None, 0).await, Ok(vec![]));
    let seqs: Vec<i64> = history(Some(3), 10)
        .await
        .expect("history")
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, [2, 1]);
    assert_eq!(store.history(&cid("bc"), None, 10).await, Ok(vec![]));
    assert_eq!(store.history(&cid("nowhere"), None, 10).await, Ok(vec![]));
}

#[tokio::test]
async fn add_and_remove_members() {
    let (dir, store) = fixture().await;
    send_many(&store, "ab", "a", 3).await;
    assert_eq!(store.add_member(&cid("ab"), &uid("c")).await, Ok(true));
    assert_eq!(store.add_member(&cid("ab"), &uid("c")).await, Ok(false));
    assert_eq!(store.add_member(&cid("ab"), &uid("a")).await, Ok(false));
    assert_eq!(
        store.add_member(&cid("nowhere"), &uid("c")).await,
        Err(StoreError::NotFound("conversation nowhere".into()))
    );
    assert_eq!(
        store.add_member(&cid("ab"), &uid("ghost")).await,
        Err(StoreError::UnknownUser(uid("ghost")))
    );
    let info = store
        .conversation(&cid("ab"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(info.members, [uid("a"), uid("b"), uid("c")]);
    assert_eq!(
        store.conversations_of(&uid("c")).await,
        Ok(vec![cid("ab"), cid("ac"), cid("bc")])
    );
    // A new member starts caught up on delivery, with nothing read.
    assert_eq!(delivered(&store, &[("ab", "c")]).await, [3]);
    assert_eq!(
        unread_shape(&summaries(&store, "c").await)
            .into_iter()
            .find(|s| s.0 == "ab"),
        Some(("ab".into(), 0, 3))
    );
    assert_eq!(sync(&store, "c", &[], 100).await.messages.len(), 3);

    advance(&store, &[("ab", "c", 3)]).await;
    store
        .mark_read(&cid("ab"), &uid("c"), 2)
        .await
        .expect("read");

    assert_eq!(store.remove_member(&cid("ab"), &uid("c")).await, Ok(true));
    assert_eq!(store.remove_member(&cid("ab"), &uid("c")).await, Ok(false));
    assert_eq!(
        store.remove_member(&cid("ab"), &uid("ghost")).await,
        Ok(false)
    );
    assert_eq!(
        store.remove_member(&cid("nowhere"), &uid("c")).await,
        Err(StoreError::NotFound("conversation nowhere".into()))
    );
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM members WHERE conversation_id = 'ab' AND user_id = 'c'"
        ),
        0
    );
    assert_eq!(
        store.conversations_of(&uid("c")).await,
        Ok(vec![cid("ac"), cid("bc")])
    );
    let page = sync(&store, "c", &[("ab", 0)], 100).await;
    assert!(page.messages.iter().all(|m| &*m.conversation != "ab"));
    assert_eq!(
        page.cursors,
        BTreeMap::from([(cid("ac"), 0), (cid("bc"), 0)])
    );
    assert!(
        summaries(&store, "c")
            .await
            .iter()
            .all(|s| &*s.conversation.id != "ab")
    );
    let info = store
        .conversation(&cid("ab"))
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(info.members, [uid("a"), uid("b")]);
    assert_eq!(info.last_seq, 3, "messages stay");
    assert_eq!(delivered(&store, &[("ab", "c")]).await, [0]);
    assert_eq!(advance(&store, &[("ab", "c", 5)]).await, [i64::MAX]);
    assert_eq!(
        store.mark_read(&cid("ab"), &uid("c"), 3).await,
        Err(StoreError::NotFound("member c of conversation ab".into()))
    );

    // Re-added: the old watermarks are gone; delivery starts caught up.
    assert_eq!(store.add_member(&cid("ab"), &uid("c")).await, Ok(true));
    assert_eq!(delivered(&store, &[("ab", "c")]).await, [3]);
    assert_eq!(store.mark_read(&cid("ab"), &uid("c"), 1).await, Ok(0));
}

/// A database left by the first release (only 0001 applied, with data) is
/// brought up to date on open, keeping its data: members start with their
/// history delivered and nothing read, and its client ids still make
/// retries duplicates.
#[tokio::test]
async fn migrations_apply_to_a_0001_database() {
    let dir = TempDir::new().expect("tempdir");
    {
        let conn = rusqlite::Connection::open(dir.path().join("natter.db")).expect("open");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.execute_batch(
            "CREATE TABLE schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 applied_at INTEGER NOT NULL
             )",
        )
        .expect("schema_migrations");
        conn.execute_batch(include_str!("../migrations/sqlite/0001_init.sql"))
            .expect("0001");
        conn.execute_batch(
            "INSERT INTO schema_migrations VALUES (1, 1);
             INSERT INTO users (id, name, created_at, last_seen) VALUES
                 ('a', 'User a', 10, 500), ('b', NULL, 11, NULL);
             INSERT INTO conversations (id, title, created_at, last_seq) VALUES ('ab', NULL, 12, 2);
             INSERT INTO members (conversation_id, user_id, joined_at) VALUES
                 ('ab', 'a', 12), ('ab', 'b', 12);
             INSERT INTO messages (id, conversation_id, seq, sender, content, content_type,
                                   client_message_id, sent_at) VALUES
                 ('m1', 'ab', 1, 'a', 'hi', 'text', NULL, 13),
                 ('m2', 'ab', 2, 'b', 'hello', 'text', 'c2', 14);",
        )
        .expect("old data");
    }
    assert_eq!(count(&dir, "SELECT max(version) FROM schema_migrations"), 1);

    let store = open(&dir).await;
    assert_eq!(count(&dir, "SELECT max(version) FROM schema_migrations"), 4);
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM members WHERE delivered_seq = 2 AND read_seq = 0"
        ),
        2
    );
    assert_eq!(delivered(&store, &[("ab", "a"), ("ab", "b")]).await, [2, 2]);
    assert_eq!(
        unread_shape(&summaries(&store, "a").await),
        [("ab".into(), 0, 1)]
    );
    let contacts = store.contacts_of(&uid("b"), 100).await.expect("contacts");
    assert_eq!(contacts.len(), 1);
    assert_eq!(
        (contacts[0].name.as_deref(), contacts[0].last_seen),
        (Some("User a"), Some(500))
    );
    let history = store.history(&cid("ab"), None, 10).await.expect("history");
    let ids: Vec<&str> = history.iter().map(|m| &*m.id).collect();
    assert_eq!(ids, ["m2", "m1"]);
    assert_eq!(history[0].client_message_id.as_deref(), Some("c2"));
    let retried = store
        .append(vec![msg("ab", "b", "hello", Some("c2"))])
        .await
        .expect("append");
    let retried = retried[0].clone().expect("a retry is not an error");
    assert!(retried.duplicate);
    assert_eq!(&*retried.message.id, "m2");
    // The old data takes part in the new writes.
    assert_eq!(advance(&store, &[("ab", "b", 3)]).await, [2]);
    assert_eq!(store.mark_read(&cid("ab"), &uid("a"), 2).await, Ok(0));
    assert_eq!(send_many(&store, "ab", "a", 1).await, [3]);
    store.close().await;

    // Opening again applies nothing twice and keeps the watermarks.
    let store = open(&dir).await;
    assert_eq!(count(&dir, "SELECT count(*) FROM schema_migrations"), 4);
    assert_eq!(delivered(&store, &[("ab", "a"), ("ab", "b")]).await, [2, 3]);
    assert_eq!(
        unread_shape(&summaries(&store, "a").await),
        [("ab".into(), 2, 0)]
    );
    store.close().await;
}
