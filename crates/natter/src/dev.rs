//! `natter serve --dev`: a ready local setup with no configuration.
//!
//! Generates a JWT secret once and keeps it beside the database (so tokens
//! survive restarts), creates the demo users alice, bob and carol and a
//! conversation between them if absent, and prints a token for each.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use natter_core::{ConversationId, NewConversation, NewUser, Store, StoreError, UserId};

use crate::{DatabaseArgs, database_path};

const DEMO_USERS: [&str; 3] = ["alice", "bob", "carol"];
const DEMO_CONVERSATION: &str = "demo";

pub async fn prepare(
    database: &DatabaseArgs,
    store: &dyn Store,
    port: u16,
) -> anyhow::Result<Vec<u8>> {
    let secret_path = secret_path(database);
    let secret = load_or_create_secret(&secret_path)?;
    let mut members = Vec::new();
    for name in DEMO_USERS {
        let id = UserId::new_unchecked(name);
        match store
            .add_user(NewUser {
                id: id.clone(),
                name: Some(capitalized(name)),
            })
            .await
        {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e).context("cannot create the demo users"),
        }
        members.push(id);
    }
    let demo = NewConversation {
        id: ConversationId::new_unchecked(DEMO_CONVERSATION),
        title: Some("Demo".into()),
        members: members.clone(),
    };
    match store.create_conversation(demo).await {
        Ok(_) | Err(StoreError::Conflict(_)) => {}
        Err(e) => return Err(e).context("cannot create the demo conversation"),
    }
    println!("natter dev mode: secret kept in {}", secret_path.display());
    println!("demo conversation id: {DEMO_CONVERSATION}");
    for user in &members {
        let token = natter_server::auth::mint(&secret, user, Duration::from_secs(7 * 86_400))?;
        println!("{user}: ws://localhost:{port}/ws?token={token}");
    }
    Ok(secret)
}

fn secret_path(database: &DatabaseArgs) -> PathBuf {
    let db = database_path(database).unwrap_or_else(|| PathBuf::from("natter.db"));
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".jwt-secret");
    db.with_file_name(name)
}

fn load_or_create_secret(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if let Ok(secret) = std::fs::read_to_string(path) {
        let secret = secret.trim();
        if !secret.is_empty() {
            return Ok(secret.as_bytes().to_vec());
        }
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, &secret).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(secret.into_bytes())
}

#[cfg(unix)]
fn write_private(path: &PathBuf, contents: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &PathBuf, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
