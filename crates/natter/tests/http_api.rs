//! The HTTP API under `/api` (docs/http-api.md), over real sockets: every
//! endpoint's answer, every refusal with its status and JSON error, unread
//! counts fed by the WebSocket, and membership changes reaching live
//! connections at once.

mod common;

use common::*;
use natter_client::{Client, ErrorCode, ServerFrame, TokenVia};
use serde_json::{Value, json};

const ADMIN: &str = "admin-credential-for-tests-0123456789";

async fn start_with_admin() -> TestServer {
    TestServer::start_with(|c| c.admin_token = Some(ADMIN.to_string())).await
}

/// Asserts the status and the JSON error code; returns the error message.
#[track_caller]
fn assert_error(response: &HttpResponse, status: u16, code: &str) -> String {
    assert_eq!(
        response.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&response.body)
    );
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "JSON error: {:?}",
        response.headers
    );
    let body = response.json();
    assert_eq!(body["code"], code, "{body}");
    let message = body["message"].as_str().expect("a message").to_string();
    assert!(!message.is_empty());
    message
}

fn is_iso8601(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 24 && s.ends_with('Z') && s.as_bytes()[10] == b'T')
}

/// Waits for a frame `pick` accepts, skipping every other frame.
async fn wait_for<T>(client: &mut Client, mut pick: impl FnMut(ServerFrame) -> Option<T>) -> T {
    loop {
        if let Some(found) = pick(next(client).await) {
            return found;
        }
    }
}

/// The caller's entry for `id` in `GET /api/conversations`.
async fn summary(server: &TestServer, user: &str, id: &str) -> Value {
    let response = api(
        server,
        "GET",
        "/api/conversations",
        Some(&token(user)),
        None,
    )
    .await;
    assert_eq!(response.status, 200);
    let list = response.json();
    list.as_array()
        .expect("an array")
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{user} has no {id}: {list}"))
}

fn seqs(history: &Value) -> Vec<i64> {
    history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["seq"].as_i64().expect("seq"))
        .collect()
}

// ---------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn me_answers_who_the_token_names() {
    let server = start_with_admin().await;
    let response = api(&server, "GET", "/api/me", Some(&token("alice")), None).await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json"))
    );
    let me = response.json();
    assert_eq!(me["id"], "alice");
    assert_eq!(me["name"], Value::Null);
    assert!(is_iso8601(&me["createdAt"]), "{me}");
    assert!(
        me["lastSeen"].is_null() || is_iso8601(&me["lastSeen"]),
        "{me}"
    );
    // The scheme is case-insensitive.
    let auth = format!("bearer {}", token("bob"));
    let response = http_raw(
        server.addr,
        "GET",
        "/api/me",
        &[("Authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(response.json()["id"], "bob");
}

#[tokio::test]
async fn user_endpoints_refuse_missing_and_bad_tokens_with_401() {
    let server = start_with_admin().await;
    let sign = |claims: Value| {
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET).expect("key");
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign")
    };
    let later = jsonwebtoken::get_current_timestamp() + 3600;
    let other_secret = {
        let key = jsonwebtoken::EncodingKey::from_secret(b"another-secret").expect("key");
        let claims = json!({"sub": "alice", "exp": later});
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign")
    };
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("garbage", Some("Bearer not-a-jwt".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("basic scheme", Some(format!("Basic {}", token("alice")))),
        ("other secret", Some(format!("Bearer {other_secret}"))),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                sign(json!({"sub": "alice", "exp": 1}))
            )),
        ),
        (
            "unknown user",
            Some(format!(
                "Bearer {}",
                sign(json!({"sub": "mallory", "exp": later}))
            )),
        ),
        ("admin token", Some(format!("Bearer {ADMIN}"))),
    ];
    let endpoints: [(&str, &str, Option<Value>); 6] = [
        ("GET", "/api/me", None),
        ("GET", "/api/conversations", None),
        ("POST", "/api/conversations", Some(json!({"members": []}))),
        ("GET", "/api/conversations/team/messages", None),
        (
            "POST",
            "/api/conversations/team/members",
            Some(json!({"userId": "eve"})),
        ),
        ("DELETE", "/api/conversations/team/members/bob", None),
    ];
    for (method, path, body) in &endpoints {
        for (what, auth) in &bad {
            let mut headers = vec![("Content-Type", "application/json")];
            if let Some(auth) = auth {
                headers.push(("Authorization", auth.as_str()));
            }
            let body = body.as_ref().map(Value::to_string);
            let response = http_raw(
                server.addr,
                method,
                path,
                &headers,
                body.as_deref().map(str::as_bytes),
            )
            .await;
            assert_eq!(response.status, 401, "{method} {path} with {what}");
            assert_error(&response, 401, "UNAUTHORIZED");
            assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        }
    }
    // Nothing was changed by the refused writes.
    let team = summary(&server, "alice", "team").await;
    assert_eq!(team["members"], json!(["alice", "bob", "carol"]));
}

// ---------------------------------------------------------------------------
// Conversations, unread counts and read receipts

#[tokio::test]
async fn conversations_list_last_message_unread_and_read_position() {
    let server = start_with_admin().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;

    // Nothing sent yet.
    let pair = summary(&server, "alice", "pair").await;
    assert_eq!(pair["members"], json!(["alice", "dave"]));
    assert_eq!(pair["title"], Value::Null);
    assert!(is_iso8601(&pair["createdAt"]), "{pair}");
    assert_eq!(
        (
            &pair["lastSeq"],
            &pair["lastMessage"],
            &pair["readSeq"],
            &pair["unread"]
        ),
        (&json!(0), &Value::Null, &json!(0), &json!(0))
    );

    let mut ids = Vec::new();
    for text in ["one", "two", "three"] {
        ids.push(send(&mut alice, "team", text).await.0);
    }
    let mut last_seen_by_bob = None;
    for _ in 0..3 {
        last_seen_by_bob = Some(next_new_message(&mut bob).await);
    }
    let last = serde_json::to_value(last_seen_by_bob.expect("three messages")).expect("json");

    let team = summary(&server, "bob", "team").await;
    assert_eq!(team["lastSeq"], 3);
    assert_eq!(team["lastMessage"], last, "the WebSocket's message object");
    assert_eq!(team["lastMessage"]["content"], "three");
    assert_eq!((&team["readSeq"], &team["unread"]), (&json!(0), &json!(3)));
    // Alice's own messages are not unread for her.
    let team_for_alice = summary(&server, "alice", "team").await;
    assert_eq!(team_for_alice["unread"], 0);
    // Most recently active first.
    let list = api(
        &server,
        "GET",
        "/api/conversations",
        Some(&token("alice")),
        None,
    )
    .await
    .json();
    let order: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["id"].as_str().expect("id"))
        .collect();
    assert_eq!(order, ["team", "pair"]);
    // Eve is in nothing.
    let eve = api(
        &server,
        "GET",
        "/api/conversations",
        Some(&token("eve")),
        None,
    )
    .await;
    assert_eq!((eve.status, eve.json()), (200, json!([])));

    // Bob reads up to "two".
    bob.send_json(&json!({"type": "read_receipt", "messageId": ids[1]}))
        .await
        .expect("send receipt");
    wait_for(&mut bob, |frame| match frame {
        ServerFrame::ReadReceipt {
            message_id,
            user_id,
            ..
        } if message_id == ids[1] && user_id == "bob" => Some(()),
        ServerFrame::Error { code, message, .. } => panic!("receipt refused: {code:?} {message}"),
        _ => None,
    })
    .await;
    let team = summary(&server, "bob", "team").await;
    assert_eq!((&team["readSeq"], &team["unread"]), (&json!(2), &json!(1)));
    // Bob's own message does not count as unread for him.
    send(&mut bob, "team", "four").await;
    let team = summary(&server, "bob", "team").await;
    assert_eq!(
        (&team["lastSeq"], &team["readSeq"], &team["unread"]),
        (&json!(4), &json!(2), &json!(1))
    );
    assert_eq!(team["lastMessage"]["sender"], "bob");
}

#[tokio::test]
async fn history_pages_newest_first_for_members_only() {
    let server = start_with_admin().await;
    let mut alice = server.connect("alice").await;
    let mut carol = server.connect("carol").await;
    for i in 1..=5 {
        send(&mut alice, "team", &format!("m{i}")).await;
    }
    let mut live = Vec::new();
    for _ in 0..5 {
        live.push(serde_json::to_value(next_new_message(&mut carol).await).expect("json"));
    }
    let alice_token = token("alice");
    let get = |path: String| {
        let token = alice_token.clone();
        let server = &server;
        async move { api(server, "GET", &path, Some(&token), None).await }
    };

    let all = get("/api/conversations/team/messages".into()).await;
    assert_eq!(all.status, 200);
    let all = all.json();
    assert_eq!(seqs(&all), [5, 4, 3, 2, 1]);
    assert_eq!(all["hasMore"], false);
    let mut newest_first = live.clone();
    newest_first.reverse();
    assert_eq!(
        all["messages"],
        json!(newest_first),
        "the WebSocket's message objects"
    );

    let page = get("/api/conversations/team/messages?limit=2".into())
        .await
        .json();
    assert_eq!((seqs(&page), &page["hasMore"]), (vec![5, 4], &json!(true)));
    let page = get("/api/conversations/team/messages?before=4&limit=2".into())
        .await
        .json();
    assert_eq!((seqs(&page), &page["hasMore"]), (vec![3, 2], &json!(true)));
    let page = get("/api/conversations/team/messages?limit=2&before=2".into())
        .await
        .json();
    assert_eq!((seqs(&page), &page["hasMore"]), (vec![1], &json!(false)));
    let page = get("/api/conversations/team/messages?before=3&limit=2".into())
        .await
        .json();
    assert_eq!((seqs(&page), &page["hasMore"]), (vec![2, 1], &json!(false)));
    let page = get("/api/conversations/team/messages?limit=200".into()).await;
    assert_eq!(page.status, 200);
    let empty = get("/api/conversations/pair/messages".into()).await.json();
    assert_eq!(empty, json!({"messages": [], "hasMore": false}));

    for bad in [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=abc",
        "limit=",
        "before=0",
        "before=-5",
        "before=x",
        "limit=1.5",
    ] {
        let response = get(format!("/api/conversations/team/messages?{bad}")).await;
        assert_error(&response, 400, "INVALID_MESSAGE");
    }
    let response = get("/api/conversations/no.such.room/messages".into()).await;
    assert_error(&response, 404, "NOT_FOUND");
    let response = get("/api/conversations/bad%20id/messages".into()).await;
    assert_error(&response, 400, "INVALID_MESSAGE");
    // Dave exists but is not in `team`.
    let response = api(
        &server,
        "GET",
        "/api/conversations/team/messages",
        Some(&token("dave")),
        None,
    )
    .await;
    assert_error(&response, 403, "FORBIDDEN");
}

#[tokio::test]
async fn creating_a_conversation_makes_the_caller_a_member() {
    let server = start_with_admin().await;
    let alice_token = token("alice");
    let post = |body: Value| {
        let token = alice_token.clone();
        let server = &server;
        async move {
            api(
                server,
                "POST",
                "/api/conversations",
                Some(&token),
                Some(body),
            )
            .await
        }
    };

    let response = post(json!({"id": "trip", "title": "Trip ✈", "members": ["bob", "bob"]})).await;
    assert_eq!(response.status, 201, "{:?}", response.json());
    let trip = response.json();
    assert_eq!(trip["id"], "trip");
    assert_eq!(trip["title"], "Trip ✈");
    assert_eq!(trip["members"], json!(["alice", "bob"]));
    assert_eq!(trip["lastSeq"], 0);
    assert!(is_iso8601(&trip["createdAt"]));
    // Bob sees it, and it works over the WebSocket at once.
    assert_eq!(summary(&server, "bob", "trip").await["title"], "Trip ✈");
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    send(&mut bob, "trip", "packed?").await;
    assert_eq!(next_new_message(&mut alice).await.content, "packed?");

    // Without an id one is generated; `participants` is accepted too; the
    // caller named among the members is not a problem.
    let response = post(json!({"participants": ["alice", "carol"], "title": null})).await;
    assert_eq!(response.status, 201);
    let generated = response.json();
    let id = generated["id"].as_str().expect("id");
    assert!(
        !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)),
        "{id}"
    );
    assert_eq!(generated["members"], json!(["alice", "carol"]));
    assert_eq!(generated["title"], Value::Null);
    // Alone is fine.
    let alone = post(json!({"members": []})).await;
    assert_eq!(alone.status, 201);
    assert_eq!(alone.json()["members"], json!(["alice"]));

    // Refusals.
    assert_error(
        &post(json!({"id": "trip", "members": ["carol"]})).await,
        409,
        "CONFLICT",
    );
    assert_error(
        &post(json!({"id": "team", "members": []})).await,
        409,
        "CONFLICT",
    );
    let unknown = assert_error(
        &post(json!({"id": "x1", "members": ["bob", "nobody"]})).await,
        400,
        "INVALID_MESSAGE",
    );
    assert!(unknown.contains("nobody"), "{unknown}");
    for body in [
        json!({"id": "has space", "members": []}),
        json!({"id": "", "members": []}),
        json!({"id": "x".repeat(65), "members": []}),
        json!({"members": ["not valid"]}),
        json!({"members": "bob"}),
        json!({"members": [1, 2]}),
        json!({"title": "no members"}),
        json!({"id": 5, "members": []}),
        json!({"title": 5, "members": []}),
        json!({"title": "t".repeat(201), "members": []}),
    ] {
        assert_error(&post(body.clone()).await, 400, "INVALID_MESSAGE");
    }
    for raw in ["not json", "{\"members\": [", "[]", "\"members\"", ""] {
        let auth = format!("Bearer {alice_token}");
        let response = http_raw(
            server.addr,
            "POST",
            "/api/conversations",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(raw.as_bytes()),
        )
        .await;
        assert_error(&response, 400, "INVALID_FORMAT");
    }
    // None of the refused requests created anything.
    let list = api(
        &server,
        "GET",
        "/api/conversations",
        Some(&token("carol")),
        None,
    )
    .await
    .json();
    assert_eq!(list.as_array().expect("array").len(), 2, "{list}");
}

#[tokio::test]
async fn adding_a_member_reaches_their_open_connection_at_once() {
    let server = start_with_admin().await;
    let mut alice = server.connect("alice").await;
    let mut dave = server.connect("dave").await;
    let mut eve = server.connect("eve").await;
    // The member list of `pair` is cached by now.
    send(&mut alice, "pair", "before eve").await;
    assert_eq!(next_new_message(&mut dave).await.content, "before eve");

    let response = api(
        &server,
        "POST",
        "/api/conversations/pair/members",
        Some(&token("dave")),
        Some(json!({"userId": "eve"})),
    )
    .await;
    assert_eq!(response.status, 201);
    assert_eq!(response.json()["members"], json!(["alice", "dave", "eve"]));
    send(&mut alice, "pair", "welcome eve").await;
    assert_eq!(next_new_message(&mut eve).await.content, "welcome eve");
    // Eve can read the history and send.
    let history = api(
        &server,
        "GET",
        "/api/conversations/pair/messages",
        Some(&token("eve")),
        None,
    )
    .await;
    assert_eq!(seqs(&history.json()), [2, 1]);
    send(&mut eve, "pair", "hi").await;
    assert_eq!(next_new_message(&mut alice).await.content, "hi");

    // Again: already a member.
    let again = api(
        &server,
        "POST",
        "/api/conversations/pair/members",
        Some(&token("alice")),
        Some(json!({"userId": "eve"})),
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["members"], json!(["alice", "dave", "eve"]));

    let add = |user: &str, conversation: &str, body: Value| {
        let token = token(user);
        let path = format!("/api/conversations/{conversation}/members");
        let server = &server;
        async move { api(server, "POST", &path, Some(&token), Some(body)).await }
    };
    // Bob is not in `pair`: he cannot add himself or anyone.
    assert_error(
        &add("bob", "pair", json!({"userId": "bob"})).await,
        403,
        "FORBIDDEN",
    );
    assert_error(
        &add("bob", "nowhere", json!({"userId": "bob"})).await,
        404,
        "NOT_FOUND",
    );
    let unknown = assert_error(
        &add("alice", "pair", json!({"userId": "nobody"})).await,
        400,
        "INVALID_MESSAGE",
    );
    assert!(unknown.contains("nobody"), "{unknown}");
    for body in [
        json!({"userId": "a b"}),
        json!({"userId": 7}),
        json!({"user": "bob"}),
        json!({}),
    ] {
        assert_error(&add("alice", "pair", body).await, 400, "INVALID_MESSAGE");
    }
    let auth = format!("Bearer {}", token("alice"));
    let response = http_raw(
        server.addr,
        "POST",
        "/api/conversations/pair/members",
        &[("Authorization", &auth)],
        Some(b"userId=bob"),
    )
    .await;
    assert_error(&response, 400, "INVALID_FORMAT");
    let pair = summary(&server, "alice", "pair").await;
    assert_eq!(pair["members"], json!(["alice", "dave", "eve"]));
}

#[tokio::test]
async fn a_removed_member_gets_no_event_of_the_conversation_once_removal_answers() {
    let server = start_with_admin().await;
    // Carol stays in `side` with alice, for the marker.
    let side = api(
        &server,
        "POST",
        "/api/conversations",
        Some(&token("alice")),
        Some(json!({"id": "side", "members": ["carol"]})),
    )
    .await;
    assert_eq!(side.status, 201);
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    // The member list of `team` is cached with carol in it.
    send(&mut alice, "team", "before").await;
    assert_eq!(next_new_message(&mut carol).await.content, "before");
    assert_eq!(next_new_message(&mut bob).await.content, "before");

    // Any member may remove another.
    let response = api(
        &server,
        "DELETE",
        "/api/conversations/team/members/carol",
        Some(&token("bob")),
        None,
    )
    .await;
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());

    send(&mut alice, "team", "secret").await;
    assert_eq!(next_new_message(&mut bob).await.content, "secret");
    // The marker is sent after the secret: if the secret had been addressed
    // to carol it would reach her first.
    send(&mut alice, "side", "marker").await;
    assert_eq!(next_new_message(&mut carol).await.content, "marker");

    // She can no longer send there, nor read it.
    carol
        .send_message("team", "still here?", None)
        .await
        .expect("send");
    match next_message_frame(&mut carol).await {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::Unauthorized),
        other => panic!("expected an error, got {other:?}"),
    }
    let history = api(
        &server,
        "GET",
        "/api/conversations/team/messages",
        Some(&token("carol")),
        None,
    )
    .await;
    assert_error(&history, 403, "FORBIDDEN");
    let team = summary(&server, "alice", "team").await;
    assert_eq!(team["members"], json!(["alice", "bob"]));
    let carols = api(
        &server,
        "GET",
        "/api/conversations",
        Some(&token("carol")),
        None,
    )
    .await
    .json();
    assert_eq!(carols.as_array().expect("array").len(), 1, "{carols}");

    let delete = |user: &str, path: &str| {
        let token = token(user);
        let path = path.to_string();
        let server = &server;
        async move { api(server, "DELETE", &path, Some(&token), None).await }
    };
    // Carol is out: she cannot remove anyone; removing her again finds nothing.
    let response = delete("carol", "/api/conversations/team/members/bob").await;
    assert_error(&response, 403, "FORBIDDEN");
    let response = delete("alice", "/api/conversations/team/members/carol").await;
    assert_error(&response, 404, "NOT_FOUND");
    let response = delete("alice", "/api/conversations/nowhere/members/bob").await;
    assert_error(&response, 404, "NOT_FOUND");
    let response = delete("alice", "/api/conversations/team/members/no%20body").await;
    assert_error(&response, 400, "INVALID_MESSAGE");

    // A member may leave: dave leaves `pair` and is cut off too.
    let mut dave = server.connect("dave").await;
    let response = delete("dave", "/api/conversations/pair/members/dave").await;
    assert_eq!(response.status, 204);
    dave.send_message("pair", "bye", None).await.expect("send");
    match next_message_frame(&mut dave).await {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::Unauthorized),
        other => panic!("expected an error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Admin

#[tokio::test]
async fn admin_creates_users_and_mints_tokens() {
    let server = start_with_admin().await;
    let admin = |path: &str, body: Value| {
        let path = path.to_string();
        let server = &server;
        async move { api(server, "POST", &path, Some(ADMIN), Some(body)).await }
    };

    let response = admin("/api/users", json!({"id": "frank", "name": "Frank Ö"})).await;
    assert_eq!(response.status, 201);
    let frank = response.json();
    assert_eq!(
        (&frank["id"], &frank["name"]),
        (&json!("frank"), &json!("Frank Ö"))
    );
    assert!(is_iso8601(&frank["createdAt"]));
    assert_eq!(frank["lastSeen"], Value::Null);
    let response = admin("/api/users", json!({"id": "grace"})).await;
    assert_eq!(
        (response.status, &response.json()["name"]),
        (201, &Value::Null)
    );
    assert_error(
        &admin("/api/users", json!({"id": "frank"})).await,
        409,
        "CONFLICT",
    );
    assert_error(
        &admin("/api/users", json!({"id": "alice"})).await,
        409,
        "CONFLICT",
    );
    for body in [
        json!({"id": "a/b"}),
        json!({"id": ""}),
        json!({"id": 3}),
        json!({"name": "no id"}),
        json!({"id": "ok", "name": "n".repeat(201)}),
    ] {
        assert_error(&admin("/api/users", body).await, 400, "INVALID_MESSAGE");
    }

    let response = admin("/api/tokens", json!({"userId": "frank", "ttlSeconds": 120})).await;
    assert_eq!(response.status, 200);
    let minted = response.json();
    let frank_token = minted["token"].as_str().expect("token").to_string();
    // `expiresAt` is the token's own `exp`, and the lifetime is the one asked.
    let claims = jwt_claims(&frank_token);
    let exp = claims["exp"].as_i64().expect("exp");
    assert_eq!(exp - claims["iat"].as_i64().expect("iat"), 120);
    assert_eq!(
        minted["expiresAt"],
        natter_core::time::iso8601(exp * 1000),
        "{minted}"
    );
    // The token works, over HTTP and WebSocket.
    let me = api(&server, "GET", "/api/me", Some(&frank_token), None).await;
    assert_eq!(me.json()["id"], "frank");
    let client = Client::connect(&server.url(), &frank_token, TokenVia::Header)
        .await
        .expect("connect with a minted token");
    assert_eq!(client.user_id, "frank");
    // The default lifetime is a day.
    let response = admin("/api/tokens", json!({"userId": "frank"})).await;
    let claims = jwt_claims(response.json()["token"].as_str().expect("token"));
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        86_400
    );
    for body in [
        json!({"userId": "frank", "ttlSeconds": 0}),
        json!({"userId": "frank", "ttlSeconds": -1}),
        json!({"userId": "frank", "ttlSeconds": 10 * 366 * 86_400 + 1}),
        json!({"userId": "frank", "ttlSeconds": "60"}),
        json!({"userId": "frank", "ttlSeconds": 1.5}),
        json!({"userId": "nobody"}),
        json!({"userId": "no body"}),
        json!({"ttlSeconds": 60}),
    ] {
        assert_error(&admin("/api/tokens", body).await, 400, "INVALID_MESSAGE");
    }
    let response = admin(
        "/api/tokens",
        json!({"userId": "frank", "ttlSeconds": 10 * 366 * 86_400}),
    )
    .await;
    assert_eq!(response.status, 200);
    let response = http_raw(
        server.addr,
        "POST",
        "/api/users",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        Some(b"{"),
    )
    .await;
    assert_error(&response, 400, "INVALID_FORMAT");
}

/// The claims of a JWT, read without checking it.
fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

#[tokio::test]
async fn admin_endpoints_refuse_anything_but_the_admin_credential() {
    let server = start_with_admin().await;
    let requests = [
        ("/api/users", json!({"id": "intruder"})),
        ("/api/tokens", json!({"userId": "alice"})),
    ];
    for (path, body) in &requests {
        let response = api(&server, "POST", path, None, Some(body.clone())).await;
        assert_error(&response, 401, "UNAUTHORIZED");
        for credential in [
            token("alice"),
            format!("{ADMIN}x"),
            ADMIN[..ADMIN.len() - 1].to_string(),
            "x".into(),
        ] {
            let response = api(&server, "POST", path, Some(&credential), Some(body.clone())).await;
            assert_error(&response, 403, "FORBIDDEN");
        }
        // The credential is checked before the body.
        let response = api(&server, "POST", path, Some("wrong"), Some(json!([]))).await;
        assert_error(&response, 403, "FORBIDDEN");
    }
    let intruder = api(&server, "GET", "/api/me", Some(&token("intruder")), None).await;
    assert_error(&intruder, 401, "UNAUTHORIZED");
}

#[tokio::test]
async fn admin_endpoints_do_not_exist_without_an_admin_token() {
    for configured in [None, Some(String::new())] {
        let server = TestServer::start_with(|c| c.admin_token = configured).await;
        for (path, body) in [
            ("/api/users", json!({"id": "frank"})),
            ("/api/tokens", json!({"userId": "alice"})),
        ] {
            for credential in [None, Some(""), Some(ADMIN), Some("x")] {
                let credential = credential.filter(|c| !c.is_empty());
                let response = api(&server, "POST", path, credential, Some(body.clone())).await;
                assert_error(&response, 404, "NOT_FOUND");
            }
        }
        let frank = server
            .store
            .user(&uid("frank"))
            .await
            .expect("store answers");
        assert!(frank.is_none());
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------
// Routing

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let server = start_with_admin().await;
    let alice = token("alice");
    for path in [
        "/api/nope",
        "/api",
        "/api/conversations/team",
        "/api/conversations/team/messages/1",
        "/api/me/too",
    ] {
        let response = api(&server, "GET", path, Some(&alice), None).await;
        assert_error(&response, 404, "NOT_FOUND");
        // Also without a token: routing comes first.
        let response = api(&server, "GET", path, None, None).await;
        assert_error(&response, 404, "NOT_FOUND");
    }
    for (method, path) in [
        ("PUT", "/api/me"),
        ("DELETE", "/api/conversations"),
        ("POST", "/api/conversations/team/messages"),
        ("GET", "/api/users"),
        ("GET", "/api/conversations/team/members/bob"),
    ] {
        let response = api(&server, method, path, Some(&alice), None).await;
        assert_error(&response, 405, "METHOD_NOT_ALLOWED");
        assert!(response.header("allow").is_some(), "{method} {path}");
    }
    // A body over the limit.
    let huge = json!({"members": [], "title": "x".repeat(200 * 1024)});
    let response = api(
        &server,
        "POST",
        "/api/conversations",
        Some(&alice),
        Some(huge),
    )
    .await;
    assert_error(&response, 413, "PAYLOAD_TOO_LARGE");
    // The server is unharmed.
    let me = api(&server, "GET", "/api/me", Some(&alice), None).await;
    assert_eq!(me.status, 200);
}

#[tokio::test]
async fn a_database_failure_is_a_500_without_details() {
    let server = start_with_admin().await;
    server.store.close().await;
    let response = api(
        &server,
        "GET",
        "/api/conversations",
        Some(&token("alice")),
        None,
    )
    .await;
    let message = assert_error(&response, 500, "INTERNAL_ERROR");
    assert!(!message.to_lowercase().contains("sqlite"), "{message}");
}

#[tokio::test]
async fn the_binary_takes_the_admin_token_from_its_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("natter.db");
    seed_database(&database).await;
    let with = NatterProcess::start(&database, &["--admin-token", ADMIN]).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], with.port));
    let create = |credential: String, id: &str| {
        let body = json!({"id": id}).to_string();
        async move {
            http_raw(
                addr,
                "POST",
                "/api/users",
                &[("Authorization", &format!("Bearer {credential}"))],
                Some(body.as_bytes()),
            )
            .await
        }
    };
    assert_eq!(create(ADMIN.to_string(), "frank").await.status, 201);
    assert_error(&create(token("alice"), "grace").await, 403, "FORBIDDEN");
    with.kill();

    let without = NatterProcess::start(&database, &[]).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], without.port));
    let response = http_raw(
        addr,
        "POST",
        "/api/users",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        Some(br#"{"id": "grace"}"#),
    )
    .await;
    assert_error(&response, 404, "NOT_FOUND");
}
