//! The management commands: each opens the store, does one thing, prints
//! one result line, and fails with one clear line.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use natter_core::{ConversationId, ImportData, NewConversation, NewUser, UserId};

use crate::{DatabaseArgs, SecretArgs, open_store};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (ids: 1 to 64 characters from A-Z a-z 0-9 _ . -).
    Add {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Subcommand)]
pub enum ConversationCommand {
    /// Create a conversation between users; prints its id.
    Create {
        /// Its id (generated when absent).
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        title: Option<String>,
        /// The participants.
        #[arg(required = true)]
        users: Vec<String>,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Args)]
pub struct TokenArgs {
    user: String,
    /// Lifetime in seconds (at most ten years).
    #[arg(long, default_value_t = 86_400)]
    ttl: u64,
    #[command(flatten)]
    secret: SecretArgs,
    #[command(flatten)]
    database: DatabaseArgs,
}

#[derive(Args)]
pub struct ImportArgs {
    /// `{"users": [{"id", "name"}], "conversations": [{"id", "title", "participants"}]}`
    file: PathBuf,
    #[command(flatten)]
    database: DatabaseArgs,
}

fn user_id(s: &str) -> anyhow::Result<UserId> {
    UserId::try_from(s).with_context(|| format!("invalid user id {s:?}"))
}

pub async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Add { id, name, database } = cmd;
    let id = user_id(&id)?;
    let store = open_store(&database).await?;
    let result = store.add_user(NewUser { id, name }).await;
    store.close().await;
    let user = result?;
    println!("{}", user.id);
    Ok(())
}

pub async fn conversation(cmd: ConversationCommand) -> anyhow::Result<()> {
    let ConversationCommand::Create {
        id,
        title,
        users,
        database,
    } = cmd;
    let id = match id {
        Some(id) => ConversationId::try_from(id.as_str())
            .with_context(|| format!("invalid conversation id {id:?}"))?,
        None => ConversationId::new_unchecked(uuid_like()),
    };
    let members = users
        .iter()
        .map(|u| user_id(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let store = open_store(&database).await?;
    let result = store
        .create_conversation(NewConversation { id, title, members })
        .await;
    store.close().await;
    println!("{}", result?.id);
    Ok(())
}

/// The longest token lifetime `natter token` mints: ten years. Beyond it a
/// token is as good as permanent, and `now + ttl` could overflow.
const MAX_TTL_SECS: u64 = 10 * 366 * 86_400;

pub async fn token(args: TokenArgs) -> anyhow::Result<()> {
    let Some(secret) = args.secret.jwt_secret.filter(|s| !s.is_empty()) else {
        bail!("no JWT secret: set JWT_SECRET or pass --jwt-secret");
    };
    if !(1..=MAX_TTL_SECS).contains(&args.ttl) {
        bail!(
            "--ttl must be between 1 and {MAX_TTL_SECS} seconds, not {}",
            args.ttl
        );
    }
    let user = user_id(&args.user)?;
    let store = open_store(&args.database).await?;
    let found = store.user(&user).await;
    store.close().await;
    if found?.is_none() {
        bail!("unknown user {user}");
    }
    let token = natter_server::auth::mint(secret.as_bytes(), &user, Duration::from_secs(args.ttl))?;
    println!("{token}");
    Ok(())
}

pub async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let invalid = || format!("{} is not a valid import file", args.file.display());
    // serde would also read a struct from a JSON array (`[]` would import
    // nothing and succeed), so insist on the documented object.
    if !text.trim_start().starts_with('{') {
        bail!(
            "{}: expected a JSON object {{\"users\": [...], \"conversations\": [...]}}",
            invalid()
        );
    }
    let data: ImportData = serde_json::from_str(&text).with_context(invalid)?;
    let store = open_store(&args.database).await?;
    let result = store.import(data).await;
    store.close().await;
    let report = result.context("import failed, nothing was changed")?;
    println!(
        "imported: {} users created, {} conversations created, {} memberships added",
        report.users_created, report.conversations_created, report.members_added
    );
    Ok(())
}

/// A random conversation id that follows the id rule.
fn uuid_like() -> String {
    let n: u128 = rand::random();
    format!("c-{n:032x}")
}
