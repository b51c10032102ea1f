//! The SQLite store against real database files.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use natter_core::{
    ConversationId, MessageId, NewMessage, UserId,
    store::{
        ImportData, ImportReport, NewConversation, NewUser, Store, StoreError, SyncPage, SyncQuery,
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
    assert_eq!(count(&dir, "SELECT count(*) FROM schema_migrations"), 1);
    assert_eq!(count(&dir, "SELECT max(version) FROM schema_migrations"), 1);
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
        count(&dir, "SELECT last_seq FROM conversations WHERE id = 'ab'"),
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
    assert_eq!(store.import(import_data()).await, Err(closed));
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
