//! The HTTP API under `/api`: JSON, authenticated with the same JWT as the
//! WebSocket (`Authorization: Bearer`), admin endpoints with the admin
//! credential. Documented in `docs/http-api.md`.

use std::sync::Arc;

use axum::Router;

use crate::App;

pub fn router() -> Router<Arc<App>> {
    Router::new()
}
