//! Recovery: after a reconnect, `sync` replays exactly what was missed, in
//! order, by cursors or by the original design's `lastMessageId`, in pages.

mod common;

use std::collections::BTreeMap;

use common::*;
use natter_client::{Client, ErrorCode, ServerFrame, WireMessage};
use serde_json::{Value, json};

/// Sends a sync request and collects the replay up to `sync_complete`.
async fn sync(
    client: &mut Client,
    request: Value,
) -> (Vec<WireMessage>, BTreeMap<String, i64>, bool) {
    client.send_json(&request).await.expect("sync");
    let mut replayed = Vec::new();
    loop {
        match next_message_frame(client).await {
            ServerFrame::NewMessage { message, replay } => {
                assert!(replay, "replayed messages carry replay: true");
                replayed.push(message);
            }
            ServerFrame::SyncComplete {
                cursors, has_more, ..
            } => {
                return (replayed, cursors, has_more);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn seqs(messages: &[WireMessage]) -> Vec<i64> {
    messages.iter().map(|m| m.seq).collect()
}

#[tokio::test]
async fn sync_with_cursors_replays_exactly_what_was_missed() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    for i in 1..=5 {
        send(&mut alice, "team", &format!("team {i}")).await;
    }
    send(&mut alice, "pair", "pair 1").await;

    // Bob had team up to seq 2.
    let mut bob = server.connect("bob").await;
    let (replayed, cursors, has_more) = sync(
        &mut bob,
        json!({"type": "sync", "cursors": {"team": 2}, "requestId": "s1"}),
    )
    .await;
    assert_eq!(seqs(&replayed), [3, 4, 5]);
    assert_eq!(replayed[0].content, "team 3");
    assert!(
        replayed.iter().all(|m| m.conversation_id == "team"),
        "never pair: not his"
    );
    assert_eq!(cursors, BTreeMap::from([("team".to_string(), 5)]));
    assert!(!has_more);

    // Up to date: nothing to replay.
    let (replayed, cursors, _) = sync(&mut bob, json!({"type": "sync", "cursors": cursors})).await;
    assert!(replayed.is_empty());
    assert_eq!(cursors["team"], 5);

    // Alice is in both; a conversation without a cursor replays from the start.
    let mut alice2 = server.connect("alice").await;
    let (replayed, cursors, _) =
        sync(&mut alice2, json!({"type": "sync", "cursors": {"team": 4}})).await;
    let got: Vec<_> = replayed
        .iter()
        .map(|m| (m.conversation_id.as_str(), m.seq))
        .collect();
    assert_eq!(got, [("pair", 1), ("team", 5)]);
    assert_eq!(
        cursors,
        BTreeMap::from([("pair".into(), 1), ("team".into(), 5)])
    );
}

#[tokio::test]
async fn sync_with_last_message_id_replays_everything_committed_after_it() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(send(&mut alice, "team", &format!("team {i}")).await.0);
    }
    send(&mut alice, "pair", "pair 1").await;
    send(&mut alice, "team", "team 4").await;

    // The original client remembers only the last message it saw.
    let mut alice2 = server.connect("alice").await;
    let (replayed, cursors, has_more) = sync(
        &mut alice2,
        json!({"type": "sync", "lastMessageId": ids[1]}),
    )
    .await;
    let got: Vec<_> = replayed
        .iter()
        .map(|m| (m.conversation_id.as_str(), m.seq))
        .collect();
    assert_eq!(got, [("pair", 1), ("team", 3), ("team", 4)]);
    assert_eq!(
        cursors,
        BTreeMap::from([("pair".into(), 1), ("team".into(), 4)])
    );
    assert!(!has_more);

    let (replayed, _, _) = sync(
        &mut alice2,
        json!({"type": "sync", "lastMessageId": ids[2]}),
    )
    .await;
    assert_eq!(
        replayed
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>(),
        ["pair 1", "team 4"]
    );
}

#[tokio::test]
async fn an_unknown_or_foreign_last_message_id_is_not_found() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let (team_message, _) = send(&mut alice, "team", "team only").await;
    let mut dave = server.connect("dave").await;
    for id in ["no-such-message", team_message.as_str()] {
        dave.send_json(&json!({"type": "sync", "lastMessageId": id, "requestId": "x"}))
            .await
            .expect("send");
        assert_eq!(
            next_error(&mut dave).await,
            (ErrorCode::NotFound, Some("x".into()))
        );
    }
}

#[tokio::test]
async fn a_large_gap_is_paged_with_has_more() {
    let server = TestServer::start_with(|c| c.rate_limit_per_minute = 0).await;
    let mut alice = server.connect("alice").await;
    for i in 0..1200 {
        alice
            .send_message("team", &format!("m{i}"), None)
            .await
            .expect("send");
    }
    let mut acked = 0;
    while acked < 1200 {
        if let ServerFrame::MessageSent { .. } = next_message_frame(&mut alice).await {
            acked += 1;
        }
    }

    let mut bob = server.connect("bob").await;
    let mut request = json!({"type": "sync", "cursors": {"team": 0}});
    let mut pages = Vec::new();
    let mut all = Vec::new();
    loop {
        let (replayed, cursors, has_more) = sync(&mut bob, request).await;
        pages.push((replayed.len(), has_more));
        all.extend(seqs(&replayed));
        if !has_more {
            break;
        }
        request = json!({"type": "sync", "cursors": cursors});
    }
    assert_eq!(pages, [(500, true), (500, true), (200, false)]);
    assert_eq!(
        all,
        (1..=1200).collect::<Vec<_>>(),
        "every message once, in order"
    );
}

#[tokio::test]
async fn the_sdk_keeps_cursors_and_resumes_after_a_reconnect() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    send(&mut alice, "team", "one").await;
    next_new_message(&mut bob).await;
    let cursors = bob.cursors.clone();
    assert_eq!(cursors["team"], 1);
    bob.close().await.expect("close");

    send(&mut alice, "team", "two").await;
    send(&mut alice, "team", "three").await;

    let mut bob = server.connect("bob").await;
    bob.cursors = cursors;
    bob.sync().await.expect("sync");
    assert_eq!(next_new_message(&mut bob).await.content, "two");
    assert_eq!(next_new_message(&mut bob).await.content, "three");
    assert!(matches!(
        next_message_frame(&mut bob).await,
        ServerFrame::SyncComplete {
            has_more: false,
            ..
        }
    ));
    assert_eq!(bob.cursors["team"], 3);
}
