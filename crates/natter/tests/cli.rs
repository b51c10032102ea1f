//! The management CLI, end to end: every test runs the real `natter` binary
//! on a fresh SQLite file and checks what it prints, its exit code, and what
//! it left in the database (read back through `SqliteStore`).
//!
//! The contract: a command prints one result line on stdout; a failure
//! prints exactly one `error: ...` line on stderr, nothing on stdout, exits
//! non-zero and changes nothing.

mod common;

use std::{
    io::Read,
    path::PathBuf,
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::natter_bin;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use natter_core::{ConversationId, Store, UserId};
use natter_store::{SqliteConfig, SqliteStore};
use serde_json::json;

/// Variables the binary reads that the test machine might have set.
const SCRUBBED_ENV: [&str; 8] = [
    "DATABASE_URL",
    "JWT_SECRET",
    "REDIS_URL",
    "REDIS_URI",
    "RUST_LOG",
    "LOG_FORMAT",
    "PORT",
    "HOST",
];

/// How long one run may take before it is killed; only reached by a bug.
const LIMIT: Duration = Duration::from_secs(60);

/// Runs `natter ARGS` with a clean environment plus `env`, killing it (and
/// failing the test) if it does not exit within [`LIMIT`].
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(natter_bin());
    command
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in SCRUBBED_ENV {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let mut child = command.spawn().expect("spawn natter");
    let stdout = drain(child.stdout.take().expect("stdout"));
    let stderr = drain(child.stderr.take().expect("stderr"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for natter") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("natter {args:?} still running after {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// The single line a successful command printed on stdout.
fn success(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "expected success, stderr: {stderr}");
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8 stdout");
    assert_eq!(stdout.lines().count(), 1, "one result line: {stdout:?}");
    stdout.trim_end().to_string()
}

/// Asserts a failure reported as exactly one `error:` line on stderr, with
/// nothing on stdout, and returns that line.
fn failure(out: &Output) -> String {
    let stderr = String::from_utf8(out.stderr.clone()).expect("utf-8 stderr");
    assert!(
        !out.status.success(),
        "expected a failure, stderr: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout on failure: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "one error line: {stderr:?}");
    assert!(stderr.ends_with('\n'), "a whole line: {stderr:?}");
    let line = stderr.trim_end().to_string();
    assert!(
        line.starts_with("error: "),
        "starts with `error: `: {line:?}"
    );
    line
}

/// A fresh database in its own temporary directory.
struct TestDb {
    dir: tempfile::TempDir,
}

impl TestDb {
    fn new() -> Self {
        TestDb {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("natter.db")
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.path().display())
    }

    /// Runs `natter ARGS` against this database (via DATABASE_URL).
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let url = self.url();
        let mut all = vec![("DATABASE_URL", url.as_str())];
        all.extend_from_slice(env);
        run(args, &all)
    }

    /// Writes a file beside the database and returns its path as a string.
    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path.to_str().expect("utf-8 path").to_string()
    }

    /// Opens the database the CLI wrote; close it before the next run.
    async fn store(&self) -> SqliteStore {
        SqliteStore::open(SqliteConfig::new(self.path()))
            .await
            .expect("open store")
    }
}

fn uid(s: &str) -> UserId {
    // Unchecked on purpose: the tests also look up ids the rule refuses.
    UserId::new_unchecked(s)
}

fn cid(s: &str) -> ConversationId {
    ConversationId::new_unchecked(s)
}

async fn user_name(store: &SqliteStore, id: &str) -> Option<Option<String>> {
    store
        .user(&uid(id))
        .await
        .expect("read user")
        .map(|u| u.name)
}

/// The title and the members of a conversation, if it exists.
async fn conversation(store: &SqliteStore, id: &str) -> Option<(Option<String>, Vec<String>)> {
    store
        .conversation(&cid(id))
        .await
        .expect("read conversation")
        .map(|c| {
            let members = c.members.iter().map(|m| m.to_string()).collect();
            (c.title, members)
        })
}

const SECRET: &str = "cli-test-secret-with-enough-bytes-0123456789";

/// Decodes a token with HS256 pinned and `exp` enforced; returns its claims.
fn decode(token: &str, secret: &str) -> serde_json::Value {
    let key = DecodingKey::from_secret(secret.as_bytes()).expect("key");
    let validation = Validation::new(Algorithm::HS256);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .expect("a valid HS256 token")
        .claims
}

// ---------------------------------------------------------------- user add

#[tokio::test]
async fn user_add_prints_the_id_and_creates_the_user() {
    let db = TestDb::new();
    assert_eq!(
        success(&db.run(&["user", "add", "alice", "--name", "Alice A."])),
        "alice"
    );
    assert_eq!(success(&db.run(&["user", "add", "b.o-b_9"])), "b.o-b_9");

    let store = db.store().await;
    assert_eq!(
        user_name(&store, "alice").await,
        Some(Some("Alice A.".into()))
    );
    assert_eq!(user_name(&store, "b.o-b_9").await, Some(None));
    store.close().await;
}

#[tokio::test]
async fn user_add_of_an_existing_id_fails_and_keeps_the_user() {
    let db = TestDb::new();
    success(&db.run(&["user", "add", "alice", "--name", "Original"]));

    let error = failure(&db.run(&["user", "add", "alice", "--name", "Impostor"]));
    assert!(error.contains("alice"), "names the id: {error}");
    assert!(error.contains("already exists"), "says why: {error}");

    let store = db.store().await;
    assert_eq!(
        user_name(&store, "alice").await,
        Some(Some("Original".into()))
    );
    store.close().await;
}

#[tokio::test]
async fn user_add_refuses_invalid_ids_and_changes_nothing() {
    let db = TestDb::new();
    success(&db.run(&["user", "add", "alice"]));
    let too_long = "a".repeat(65);
    let invalid = ["", too_long.as_str(), "a b", "é", r#"{"$ne":null}"#];
    for id in invalid {
        let error = failure(&db.run(&["user", "add", id]));
        assert!(error.contains("invalid user id"), "{id:?}: {error}");
    }
    // The longest valid id is accepted: the limit is 64, not less.
    let longest = "a".repeat(64);
    assert_eq!(success(&db.run(&["user", "add", &longest])), longest);

    let store = db.store().await;
    for id in invalid {
        assert_eq!(user_name(&store, id).await, None, "{id:?} was not stored");
    }
    assert_eq!(user_name(&store, "alice").await, Some(None));
    store.close().await;
}

// ------------------------------------------------------ conversation create

#[tokio::test]
async fn conversation_create_with_id_and_title() {
    let db = TestDb::new();
    for user in ["alice", "bob"] {
        success(&db.run(&["user", "add", user]));
    }
    let out = db.run(&[
        "conversation",
        "create",
        "--id",
        "team",
        "--title",
        "The Team",
        "alice",
        "bob",
    ]);
    assert_eq!(success(&out), "team");

    let store = db.store().await;
    assert_eq!(
        conversation(&store, "team").await,
        Some((Some("The Team".into()), vec!["alice".into(), "bob".into()]))
    );
    store.close().await;
}

#[tokio::test]
async fn conversation_create_without_id_prints_a_generated_valid_id() {
    let db = TestDb::new();
    success(&db.run(&["user", "add", "alice"]));
    let first = success(&db.run(&["conversation", "create", "alice"]));
    let second = success(&db.run(&["conversation", "create", "alice"]));
    for id in [&first, &second] {
        assert!(
            ConversationId::try_from(id.as_str()).is_ok(),
            "{id:?} follows the id rule"
        );
    }
    assert_ne!(first, second, "each generated id is new");

    let store = db.store().await;
    assert_eq!(
        conversation(&store, &first).await,
        Some((None, vec!["alice".into()]))
    );
    store.close().await;
}

#[tokio::test]
async fn conversation_create_with_an_unknown_member_fails_naming_it() {
    let db = TestDb::new();
    success(&db.run(&["user", "add", "alice"]));
    let error = failure(&db.run(&["conversation", "create", "--id", "c1", "alice", "zed"]));
    assert!(error.contains("zed"), "names the member: {error}");

    let store = db.store().await;
    assert_eq!(conversation(&store, "c1").await, None, "nothing created");
    store.close().await;
}

#[tokio::test]
async fn conversation_create_of_an_existing_id_fails_and_keeps_it() {
    let db = TestDb::new();
    for user in ["alice", "bob"] {
        success(&db.run(&["user", "add", user]));
    }
    success(&db.run(&[
        "conversation",
        "create",
        "--id",
        "c1",
        "--title",
        "First",
        "alice",
    ]));
    let error = failure(&db.run(&[
        "conversation",
        "create",
        "--id",
        "c1",
        "--title",
        "Second",
        "bob",
    ]));
    assert!(error.contains("c1"), "names the conversation: {error}");
    assert!(error.contains("already exists"), "says why: {error}");

    let store = db.store().await;
    assert_eq!(
        conversation(&store, "c1").await,
        Some((Some("First".into()), vec!["alice".into()]))
    );
    store.close().await;
}

#[tokio::test]
async fn conversation_create_refuses_invalid_ids() {
    let db = TestDb::new();
    success(&db.run(&["user", "add", "alice"]));

    let error = failure(&db.run(&["conversation", "create", "--id", "c2", "alice", "a b"]));
    assert!(error.contains("invalid user id"), "{error}");
    assert!(error.contains("\"a b\""), "names the member: {error}");

    let error = failure(&db.run(&["conversation", "create", "--id", "x/y", "alice"]));
    assert!(error.contains("invalid conversation id"), "{error}");
    assert!(error.contains("x/y"), "names the id: {error}");

    let store = db.store().await;
    assert_eq!(conversation(&store, "c2").await, None);
    assert_eq!(conversation(&store, "x/y").await, None);
    store.close().await;
}

// ------------------------------------------------------------------- token

#[test]
fn token_prints_a_jwt_for_the_user() {
    let db = TestDb::new();
    success(&db.run(&["user", "add", "alice"]));
    let before = jsonwebtoken::get_current_timestamp();
    let token = success(&db.run(&["token", "alice", "--ttl", "600", "--jwt-secret", SECRET]));
    let after = jsonwebtoken::get_current_timestamp();

    let claims = decode(&token, SECRET);
    assert_eq!(claims["sub"], "alice");
    let exp = claims["exp"].as_u64().expect("numeric exp");
    assert!(
        (before + 600..=after + 600).contains(&exp),
        "exp {exp} is now + ttl (now in {before}..={after})"
    );
    let wrong_key = DecodingKey::from_secret(b"another-secret").expect("key");
    assert!(
        jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &wrong_key,
            &Validation::new(Algorithm::HS256)
        )
        .is_err(),
        "signed with the given secret"
    );
}

#[test]
fn token_reads_the_secret_from_jwt_secret() {
    let db = TestDb::new();
    success(&db.run(&["user", "add", "bob"]));
    let before = jsonwebtoken::get_current_timestamp();
    let token = success(&db.run_with(&["token", "bob"], &[("JWT_SECRET", SECRET)]));

    let claims = decode(&token, SECRET);
    assert_eq!(claims["sub"], "bob");
    let exp = claims["exp"].as_u64().expect("numeric exp");
    assert!(exp >= before + 86_400, "default ttl is a day: {exp}");
}

#[test]
fn token_without_a_secret_fails() {
    let db = TestDb::new();
    success(&db.run(&["user", "add", "alice"]));
    for env in [&[][..], &[("JWT_SECRET", "")][..]] {
        let error = failure(&db.run_with(&["token", "alice"], env));
        assert!(error.contains("JWT_SECRET"), "says what to set: {error}");
    }
}

#[test]
fn token_for_an_unknown_or_invalid_user_fails() {
    let db = TestDb::new();
    let secret = [("JWT_SECRET", SECRET)];
    let error = failure(&db.run_with(&["token", "zed"], &secret));
    assert!(error.contains("unknown user zed"), "{error}");

    let error = failure(&db.run_with(&["token", "a b"], &secret));
    assert!(error.contains("invalid user id"), "{error}");
}

#[test]
fn token_refuses_a_ttl_out_of_range() {
    let db = TestDb::new();
    success(&db.run(&["user", "add", "alice"]));
    for ttl in ["0", &u64::MAX.to_string()] {
        let error =
            failure(&db.run_with(&["token", "alice", "--ttl", ttl], &[("JWT_SECRET", SECRET)]));
        assert!(error.contains("--ttl"), "{ttl}: {error}");
    }
}

// ------------------------------------------------------------------ import

fn sample_import() -> String {
    json!({
        "users": [
            {"id": "ann", "name": "Ann"},
            {"id": "ben"},
            {"id": "cat", "name": "Cat"}
        ],
        "conversations": [
            {"id": "general", "title": "General", "participants": ["ann", "ben", "cat"]},
            {"id": "pair", "participants": ["ann", "ben"]}
        ]
    })
    .to_string()
}

async fn assert_sample_imported(db: &TestDb) {
    let store = db.store().await;
    assert_eq!(user_name(&store, "ann").await, Some(Some("Ann".into())));
    assert_eq!(user_name(&store, "ben").await, Some(None));
    assert_eq!(user_name(&store, "cat").await, Some(Some("Cat".into())));
    assert_eq!(
        conversation(&store, "general").await,
        Some((
            Some("General".into()),
            vec!["ann".into(), "ben".into(), "cat".into()]
        ))
    );
    assert_eq!(
        conversation(&store, "pair").await,
        Some((None, vec!["ann".into(), "ben".into()]))
    );
    let mut of_ann = store.conversations_of(&uid("ann")).await.expect("read");
    of_ann.sort();
    assert_eq!(of_ann, vec![cid("general"), cid("pair")]);
    store.close().await;
}

#[tokio::test]
async fn import_loads_users_conversations_and_memberships() {
    let db = TestDb::new();
    let file = db.file("data.json", &sample_import());
    assert_eq!(
        success(&db.run(&["import", &file])),
        "imported: 3 users created, 2 conversations created, 5 memberships added"
    );
    assert_sample_imported(&db).await;
}

#[tokio::test]
async fn import_twice_creates_nothing_the_second_time() {
    let db = TestDb::new();
    let file = db.file("data.json", &sample_import());
    success(&db.run(&["import", &file]));
    assert_eq!(
        success(&db.run(&["import", &file])),
        "imported: 0 users created, 0 conversations created, 0 memberships added"
    );
    assert_sample_imported(&db).await;
}

#[tokio::test]
async fn import_may_name_users_that_already_exist() {
    let db = TestDb::new();
    success(&db.run(&["user", "add", "zoe", "--name", "Zoe"]));
    let file = db.file(
        "data.json",
        &json!({
            "users": [{"id": "ann"}],
            "conversations": [{"id": "c", "participants": ["ann", "zoe"]}]
        })
        .to_string(),
    );
    assert_eq!(
        success(&db.run(&["import", &file])),
        "imported: 1 users created, 1 conversations created, 2 memberships added"
    );
    let store = db.store().await;
    assert_eq!(user_name(&store, "zoe").await, Some(Some("Zoe".into())));
    assert_eq!(
        conversation(&store, "c").await,
        Some((None, vec!["ann".into(), "zoe".into()]))
    );
    store.close().await;
}

#[tokio::test]
async fn import_with_an_unknown_participant_changes_nothing() {
    let db = TestDb::new();
    success(&db.run(&["user", "add", "zoe"]));
    let file = db.file(
        "data.json",
        &json!({
            "users": [{"id": "ann"}, {"id": "ben"}],
            "conversations": [
                {"id": "fine", "participants": ["ann", "zoe"]},
                {"id": "broken", "participants": ["ann", "ghost"]}
            ]
        })
        .to_string(),
    );
    let error = failure(&db.run(&["import", &file]));
    assert!(error.contains("broken"), "names the entry: {error}");
    assert!(error.contains("ghost"), "names the participant: {error}");

    let store = db.store().await;
    for user in ["ann", "ben", "ghost"] {
        assert_eq!(user_name(&store, user).await, None, "{user} not imported");
    }
    for conv in ["fine", "broken"] {
        assert_eq!(
            conversation(&store, conv).await,
            None,
            "{conv} not imported"
        );
    }
    assert_eq!(store.conversations_of(&uid("zoe")).await, Ok(vec![]));
    assert_eq!(user_name(&store, "zoe").await, Some(None), "zoe kept");
    store.close().await;
}

#[tokio::test]
async fn import_of_malformed_json_fails_with_one_line() {
    let db = TestDb::new();
    // Truncated, spread over lines: the error must still be one line.
    let file = db.file("bad.json", "{\n  \"users\": [\n    {\"id\": \"ann\"},\n");
    let error = failure(&db.run(&["import", &file]));
    assert!(error.contains("bad.json"), "names the file: {error}");

    // Valid JSON, but not the documented object.
    for (name, contents) in [
        ("array.json", "[]"),
        ("unknown.json", r#"{"users": [], "rooms": []}"#),
        ("missing.json", r#"{"conversations": [{"id": "c"}]}"#),
    ] {
        let file = db.file(name, contents);
        let error = failure(&db.run(&["import", &file]));
        assert!(error.contains(name), "{contents}: {error}");
    }

    let missing = db.dir.path().join("does-not-exist.json");
    failure(&db.run(&["import", missing.to_str().expect("utf-8")]));

    let store = db.store().await;
    assert_eq!(user_name(&store, "ann").await, None);
    assert_eq!(conversation(&store, "c").await, None);
    store.close().await;
}

#[tokio::test]
async fn import_with_an_invalid_id_fails_naming_it() {
    let db = TestDb::new();
    let user_file = db.file(
        "users.json",
        &json!({"users": [{"id": "ann"}, {"id": "not valid!"}]}).to_string(),
    );
    let error = failure(&db.run(&["import", &user_file]));
    assert!(error.contains("not valid!"), "names the id: {error}");

    let member_file = db.file(
        "members.json",
        &json!({
            "users": [{"id": "ann"}],
            "conversations": [{"id": "c", "participants": ["ann", "{\"$ne\":null}"]}]
        })
        .to_string(),
    );
    let error = failure(&db.run(&["import", &member_file]));
    assert!(error.contains("$ne"), "names the id: {error}");

    let conversation_file = db.file(
        "conversations.json",
        &json!({"conversations": [{"id": "a/b", "participants": []}]}).to_string(),
    );
    let error = failure(&db.run(&["import", &conversation_file]));
    assert!(error.contains("a/b"), "names the id: {error}");

    let store = db.store().await;
    assert_eq!(user_name(&store, "ann").await, None, "nothing imported");
    assert_eq!(conversation(&store, "c").await, None);
    store.close().await;
}

#[tokio::test]
async fn import_of_ten_thousand_users() {
    const USERS: usize = 10_000;
    const CONVERSATIONS: usize = 1_000;
    const PER_CONVERSATION: usize = 5;
    let db = TestDb::new();
    let users: Vec<_> = (0..USERS)
        .map(|i| json!({"id": format!("user{i}"), "name": format!("User {i}")}))
        .collect();
    let conversations: Vec<_> = (0..CONVERSATIONS)
        .map(|i| {
            let participants: Vec<_> = (0..PER_CONVERSATION)
                .map(|j| format!("user{}", (i * 10 + j) % USERS))
                .collect();
            json!({"id": format!("conv{i}"), "title": format!("C{i}"), "participants": participants})
        })
        .collect();
    let file = db.file(
        "bulk.json",
        &json!({"users": users, "conversations": conversations}).to_string(),
    );

    assert_eq!(
        success(&db.run(&["import", &file])),
        format!(
            "imported: {USERS} users created, {CONVERSATIONS} conversations created, {} memberships added",
            CONVERSATIONS * PER_CONVERSATION
        )
    );

    let store = db.store().await;
    for i in (0..USERS).step_by(97).chain([USERS - 1]) {
        assert_eq!(
            user_name(&store, &format!("user{i}")).await,
            Some(Some(format!("User {i}")))
        );
    }
    for i in 0..CONVERSATIONS {
        let (title, members) = conversation(&store, &format!("conv{i}"))
            .await
            .unwrap_or_else(|| panic!("conv{i} imported"));
        assert_eq!(title, Some(format!("C{i}")));
        assert_eq!(members.len(), PER_CONVERSATION, "conv{i}");
    }
    store.close().await;
}

// ------------------------------------------------------------------- serve

#[test]
fn serve_without_a_secret_refuses_to_start() {
    let db = TestDb::new();
    let error = failure(&db.run(&["serve", "--host", "127.0.0.1", "--port", "0"]));
    assert!(error.contains("JWT_SECRET"), "says what to set: {error}");
    assert!(error.contains("--dev"), "mentions dev mode: {error}");
    assert!(!db.path().exists(), "refused before creating the database");
}

#[test]
fn help_never_shows_secret_values() {
    let secrets = [
        ("JWT_SECRET", "recognizable-jwt-secret-4f1c9a"),
        (
            "REDIS_URL",
            "redis://:recognizable-redis-password@host:6379",
        ),
        ("DATABASE_URL", "sqlite:///recognizable-database-path.db"),
    ];
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["serve", "-h"],
        &["token", "--help"],
        &["user", "add", "--help"],
        &["import", "--help"],
    ] {
        let out = run(args, &secrets);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}: {text}");
        assert!(!text.is_empty(), "{args:?} prints help");
        for (name, value) in secrets {
            assert!(!text.contains(value), "{args:?} shows {name}: {text}");
        }
        assert!(!text.contains("recognizable"), "{args:?}: {text}");
    }
}

// ------------------------------------------------------------- every error

#[test]
fn database_failures_are_one_line() {
    let db = TestDb::new();
    let not_a_database = db.file("garbage.db", "this is not a SQLite database\n");
    let cases = [
        "mysql://localhost/natter".to_string(),
        "postgres://user:pw@localhost/natter".to_string(),
        format!("sqlite://{}", db.dir.path().display()),
        format!("sqlite://{}/missing-dir/natter.db", db.dir.path().display()),
        format!("sqlite://{not_a_database}"),
        format!("sqlite://{}?journal=off", db.path().display()),
    ];
    for url in &cases {
        let out = run(&["user", "add", "alice", "--database-url", url], &[]);
        let error = failure(&out);
        assert!(!error.contains(":pw@"), "no password in errors: {error}");
    }
}
