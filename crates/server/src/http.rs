//! HTTP routes and the accept loop.
//!
//! We drive hyper's HTTP/1 connections ourselves instead of `axum::serve`:
//! it lets an upgraded connection hand back its plain `TcpStream` (our
//! WebSocket layer reads it directly) and lets shutdown reach every
//! connection.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use natter_core::time;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{App, api, session};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/ws", get(session::upgrade))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .nest("/api", api::router())
        .with_state(app)
}

/// `/` serves WebSocket upgrades (the original design's URL) and otherwise
/// says what this is.
async fn root(state: State<Arc<App>>, req: Request) -> Response {
    if req.headers().contains_key(header::UPGRADE) {
        return session::upgrade(state, req).await;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "natter chat server: connect a WebSocket to /ws?token=<JWT>\n",
    )
        .into_response()
}

/// The original design's health document, with real checks.
async fn health(State(app): State<Arc<App>>) -> Response {
    let database = app.chat.store().ping().await.is_ok();
    let broker = app.broker.is_healthy();
    let serving = !app.shutdown.is_cancelled();
    let healthy = database && broker && serving;
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "timestamp": time::iso8601(time::now_ms()),
        "websocket": if serving { "running" } else { "draining" },
        "database": if database { "connected" } else { "disconnected" },
        "redis": match (app.broker.is_shared(), broker) {
            (false, _) => "not configured",
            (true, true) => "connected",
            (true, false) => "disconnected",
        },
        "activeConnections": app.hub.connection_count(),
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// For load balancers: 503 as soon as the instance starts draining, so no
/// new client is sent here.
async fn ready(State(app): State<Arc<App>>) -> Response {
    if app.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

/// Accepts connections until `stop` is cancelled.
pub async fn accept_loop(
    listener: TcpListener,
    router: Router,
    header_timeout: std::time::Duration,
    stop: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, mostly: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(
            stream,
            router.clone(),
            header_timeout,
            stop.clone(),
        ));
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    header_timeout: std::time::Duration,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router);
    // A client that opens a connection and never finishes its request
    // headers is dropped instead of holding a file descriptor forever
    // (hyper enforces this timeout only when given a timer).
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}
