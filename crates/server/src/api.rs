//! The HTTP API under `/api`: JSON, authenticated with the same JWT as the
//! WebSocket (`Authorization: Bearer`), admin endpoints with the admin
//! credential. Documented in `docs/http-api.md`.
//!
//! Every answer is JSON, errors included: `{"code", "message"}` with the
//! HTTP status that fits (see [`ApiError`]). Messages never carry internals:
//! a database failure is logged here and answered with a generic 500.
//!
//! Membership changes go to the store first, then drop the chat service's
//! cached member list ([`crate::chat::Chat::forget_members`]), so the next
//! event of the conversation is addressed to the new members.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use natter_core::{
    ConversationId, ConversationInfo, ConversationSummary, NewConversation, NewUser, StoreError,
    User, UserId, time,
};
use natter_protocol::WireMessage;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::json;

use crate::{App, auth, chat};

/// Largest request body accepted (413 beyond).
const MAX_BODY_BYTES: usize = 128 * 1024;
/// `limit` of the history endpoint when absent, and its largest value.
const DEFAULT_HISTORY_LIMIT: i64 = 50;
const MAX_HISTORY_LIMIT: i64 = 200;
/// Members named in one `POST /api/conversations`.
const MAX_MEMBERS: usize = 1000;
/// Longest conversation title and user name, in characters.
const MAX_TITLE_CHARS: usize = 200;
/// Token lifetime when `ttlSeconds` is absent, and its bounds (as `natter token`).
const DEFAULT_TTL_SECS: i64 = 86_400;
const MAX_TTL_SECS: i64 = 10 * 366 * 86_400;

pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/me", get(me))
        .route(
            "/conversations",
            get(list_conversations).post(create_conversation),
        )
        .route("/conversations/{id}/messages", get(history))
        .route("/conversations/{id}/members", post(add_member))
        .route("/conversations/{id}/members/{user}", delete(remove_member))
        .route("/users", post(create_user))
        .route("/tokens", post(create_token))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_such_endpoint)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

// ---------------------------------------------------------------------------
// Errors

/// An error answer: `{"code": "...", "message": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the body is not a JSON object.
    fn format(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_FORMAT", message)
    }

    /// 400: well-formed, but a field or parameter is missing, of the wrong
    /// type or out of range.
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_MESSAGE", message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CONFLICT", message)
    }

    fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error, retry later",
        )
    }

    fn no_such_endpoint() -> Self {
        Self::not_found("no such endpoint")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({ "code": self.code, "message": self.message }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::not_found(format!("{what} not found")),
            StoreError::Conflict(what) => Self::conflict(format!("{what} already exists")),
            StoreError::UnknownUser(user) => Self::invalid(format!("unknown user {user:?}")),
            StoreError::Invalid(detail) => Self::invalid(detail),
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "store unavailable");
                Self::internal()
            }
        }
    }
}

async fn no_such_endpoint() -> ApiError {
    ApiError::no_such_endpoint()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "method not allowed on this endpoint",
    )
}

// ---------------------------------------------------------------------------
// Extractors

/// The authenticated user: a valid client JWT in `Authorization: Bearer`,
/// naming a user that exists.
pub struct Caller(User);

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer token"))?;
        let identity = app
            .verifier
            .verify(token)
            .map_err(|_| ApiError::unauthorized("invalid or expired token"))?;
        match app.chat.store().user(&identity.user).await? {
            Some(user) => Ok(Caller(user)),
            None => Err(ApiError::unauthorized("unknown user")),
        }
    }
}

/// The admin credential: `Authorization: Bearer <ADMIN_TOKEN>`. With no
/// admin token configured the admin endpoints do not exist (404).
pub struct Admin;

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let Some(expected) = app.config.admin_token.as_deref().filter(|t| !t.is_empty()) else {
            return Err(ApiError::no_such_endpoint());
        };
        let presented = bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer admin token"))?;
        if !same_secret(presented.as_bytes(), expected.as_bytes()) {
            return Err(ApiError::forbidden("admin credential required"));
        }
        Ok(Admin)
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares a presented secret with the configured one in time independent
/// of where they differ: the digests are compared without short-circuit,
/// the bytes only once the digests already match.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    use sha1::{Digest, Sha1};
    let a = Sha1::digest(presented);
    let b = Sha1::digest(expected);
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0 && presented == expected
}

/// A JSON object body. Not JSON or not an object: 400 `INVALID_FORMAT`;
/// fields missing or of the wrong type: 400 `INVALID_MESSAGE`. The
/// `Content-Type` is not checked.
pub struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::format("cannot read the request body")
            }
        })?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::format(format!("the body is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::format("the body must be a JSON object"));
        }
        serde_json::from_value(value)
            .map(Body)
            .map_err(|e| ApiError::invalid(format!("invalid body: {e}")))
    }
}

/// Path parameters, with a JSON 400 when they cannot be decoded.
pub struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Params(t))
            .map_err(|_| ApiError::invalid("invalid path parameter"))
    }
}

fn conversation_id(s: &str) -> Result<ConversationId, ApiError> {
    ConversationId::try_from(s)
        .map_err(|e| ApiError::invalid(format!("invalid conversation id {s:?}: {e}")))
}

fn user_id(s: &str) -> Result<UserId, ApiError> {
    UserId::try_from(s).map_err(|e| ApiError::invalid(format!("invalid user id {s:?}: {e}")))
}

fn check_text(what: &str, text: &Option<String>) -> Result<(), ApiError> {
    match text {
        Some(t) if t.chars().count() > MAX_TITLE_CHARS => Err(ApiError::invalid(format!(
            "{what} has at most {MAX_TITLE_CHARS} characters"
        ))),
        _ => Ok(()),
    }
}

/// The conversation, if it exists (404) and `user` is a member (403).
async fn member_of(
    app: &App,
    conversation: &ConversationId,
    user: &UserId,
) -> Result<ConversationInfo, ApiError> {
    let info = app
        .chat
        .store()
        .conversation(conversation)
        .await?
        .ok_or_else(|| ApiError::not_found("conversation not found"))?;
    if !info.members.contains(user) {
        return Err(ApiError::forbidden("not a member of this conversation"));
    }
    Ok(info)
}

// ---------------------------------------------------------------------------
// Response shapes

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserView {
    id: UserId,
    name: Option<String>,
    created_at: String,
    last_seen: Option<String>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            name: u.name,
            created_at: time::iso8601(u.created_at),
            last_seen: u.last_seen.map(time::iso8601),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ConversationView {
    id: ConversationId,
    title: Option<String>,
    members: Vec<UserId>,
    created_at: String,
    last_seq: i64,
}

impl From<ConversationInfo> for ConversationView {
    fn from(c: ConversationInfo) -> Self {
        Self {
            id: c.id,
            title: c.title,
            members: c.members,
            created_at: time::iso8601(c.created_at),
            last_seq: c.last_seq,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SummaryView {
    #[serde(flatten)]
    conversation: ConversationView,
    last_message: Option<WireMessage>,
    read_seq: i64,
    unread: i64,
}

impl From<ConversationSummary> for SummaryView {
    fn from(s: ConversationSummary) -> Self {
        Self {
            conversation: s.conversation.into(),
            last_message: s.last_message.as_ref().map(chat::wire),
            read_seq: s.read_seq,
            unread: s.unread,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryView {
    messages: Vec<WireMessage>,
    has_more: bool,
}

// ---------------------------------------------------------------------------
// User endpoints

/// `GET /api/me`
async fn me(Caller(user): Caller) -> Json<UserView> {
    Json(user.into())
}

/// `GET /api/conversations`
async fn list_conversations(
    State(app): State<Arc<App>>,
    Caller(user): Caller,
) -> Result<Json<Vec<SummaryView>>, ApiError> {
    let summaries = app.chat.store().conversation_summaries(&user.id).await?;
    Ok(Json(summaries.into_iter().map(SummaryView::from).collect()))
}

#[derive(Deserialize)]
struct CreateConversation {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(alias = "participants")]
    members: Vec<String>,
}

/// `POST /api/conversations`: the caller is always a member.
async fn create_conversation(
    State(app): State<Arc<App>>,
    Caller(user): Caller,
    Body(body): Body<CreateConversation>,
) -> Result<(StatusCode, Json<ConversationView>), ApiError> {
    let id = match body.id.as_deref() {
        Some(id) => conversation_id(id)?,
        None => ConversationId::new_unchecked(format!("c-{}", uuid::Uuid::now_v7().simple())),
    };
    check_text("title", &body.title)?;
    if body.members.len() > MAX_MEMBERS {
        return Err(ApiError::invalid(format!(
            "at most {MAX_MEMBERS} members per request"
        )));
    }
    let mut members = body
        .members
        .iter()
        .map(|m| user_id(m))
        .collect::<Result<BTreeSet<_>, _>>()?;
    members.insert(user.id);
    let info = app
        .chat
        .store()
        .create_conversation(NewConversation {
            id: id.clone(),
            title: body.title,
            members: members.into_iter().collect(),
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                ApiError::conflict(format!("conversation {id} already exists"))
            }
            other => other.into(),
        })?;
    app.chat.forget_members(&id);
    Ok((StatusCode::CREATED, Json(info.into())))
}

#[derive(Deserialize)]
struct HistoryQuery {
    before: Option<String>,
    limit: Option<String>,
}

/// `GET /api/conversations/{id}/messages?before=SEQ&limit=N`: newest first.
async fn history(
    State(app): State<Arc<App>>,
    Caller(user): Caller,
    Params(id): Params<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryView>, ApiError> {
    let id = conversation_id(&id)?;
    let Query(query) = query.map_err(|_| ApiError::invalid("invalid query string"))?;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_HISTORY_LIMIT,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_HISTORY_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "limit must be an integer from 1 to {MAX_HISTORY_LIMIT}"
                ))
            })?,
    };
    let before = match query.before.as_deref() {
        None => None,
        Some(b) => Some(
            b.parse::<i64>()
                .ok()
                .filter(|b| *b >= 1)
                .ok_or_else(|| ApiError::invalid("before must be a positive integer (a seq)"))?,
        ),
    };
    member_of(&app, &id, &user.id).await?;
    let limit = limit as usize;
    let mut messages = app.chat.store().history(&id, before, limit + 1).await?;
    let has_more = messages.len() > limit;
    messages.truncate(limit);
    Ok(Json(HistoryView {
        messages: messages.iter().map(chat::wire).collect(),
        has_more,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddMember {
    user_id: String,
}

/// `POST /api/conversations/{id}/members`: 201 added, 200 already a member.
async fn add_member(
    State(app): State<Arc<App>>,
    Caller(user): Caller,
    Params(id): Params<String>,
    Body(body): Body<AddMember>,
) -> Result<(StatusCode, Json<ConversationView>), ApiError> {
    let id = conversation_id(&id)?;
    let new_member = user_id(&body.user_id)?;
    member_of(&app, &id, &user.id).await?;
    let added = app.chat.store().add_member(&id, &new_member).await?;
    if added {
        app.chat.forget_members(&id);
    }
    let info = app
        .chat
        .store()
        .conversation(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("conversation not found"))?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info.into())))
}

/// `DELETE /api/conversations/{id}/members/{user}`: any member may remove
/// any member, themselves included. Once this answers, the removed user
/// gets none of the conversation's new events.
async fn remove_member(
    State(app): State<Arc<App>>,
    Caller(user): Caller,
    Params((id, member)): Params<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = conversation_id(&id)?;
    let member = user_id(&member)?;
    member_of(&app, &id, &user.id).await?;
    let removed = app.chat.store().remove_member(&id, &member).await?;
    if !removed {
        return Err(ApiError::not_found(format!(
            "{member} is not a member of this conversation"
        )));
    }
    app.chat.forget_members(&id);
    // Sends validated against the old member list may still be queued:
    // let them be committed and published before answering, so nothing of
    // the conversation reaches the removed member after the 204.
    app.chat.flush().await;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------
// Admin endpoints

#[derive(Deserialize)]
struct CreateUser {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /api/users` (admin).
async fn create_user(
    State(app): State<Arc<App>>,
    _: Admin,
    Body(body): Body<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let id = user_id(&body.id)?;
    check_text("name", &body.name)?;
    let user = app
        .chat
        .store()
        .add_user(NewUser {
            id: id.clone(),
            name: body.name,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict(format!("user {id} already exists")),
            other => other.into(),
        })?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateToken {
    user_id: String,
    #[serde(default)]
    ttl_seconds: Option<i64>,
}

/// `POST /api/tokens` (admin): a client token for an existing user.
async fn create_token(
    State(app): State<Arc<App>>,
    _: Admin,
    Body(body): Body<CreateToken>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = user_id(&body.user_id)?;
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::invalid(format!(
            "ttlSeconds must be from 1 to {MAX_TTL_SECS}"
        )));
    }
    if app.chat.store().user(&user).await?.is_none() {
        return Err(ApiError::invalid(format!(
            "unknown user {:?}",
            user.as_str()
        )));
    }
    let token = auth::mint(
        &app.config.jwt_secret,
        &user,
        Duration::from_secs(ttl as u64),
    )
    .map_err(|e| {
        tracing::error!(error = %e, "cannot mint a token");
        ApiError::internal()
    })?;
    // The expiry the token really carries, read back from it.
    let identity = app.verifier.verify(&token).map_err(|e| {
        tracing::error!(error = %e, "a freshly minted token does not verify");
        ApiError::internal()
    })?;
    let expires_at = i64::try_from(identity.expires_at)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000);
    Ok(Json(json!({
        "token": token,
        "expiresAt": time::iso8601(expires_at),
    })))
}
