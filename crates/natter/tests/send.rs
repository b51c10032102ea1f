//! Sending: durable ack to the sender, `new_message` to every connection of
//! every other participant and to the sender's other devices, never to
//! anyone else; idempotent retries; gapless, ordered `seq`.

mod common;

use std::{collections::HashSet, time::Duration};

use common::*;
use natter_client::ServerFrame;
use natter_core::NewUser;

#[tokio::test]
async fn a_message_reaches_every_device_of_every_participant_and_nobody_else() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut alice_phone = server.connect("alice").await;
    let mut bob_laptop = server.connect("bob").await;
    let mut bob_phone = server.connect("bob").await;
    let mut carol = server.connect("carol").await;
    let mut dave = server.connect("dave").await;
    let mut eve = server.connect("eve").await;

    let request = alice
        .send_message("team", "hello team", Some("c-1"))
        .await
        .expect("send");
    match next_message_frame(&mut alice).await {
        ServerFrame::MessageSent {
            message_id,
            conversation_id,
            seq,
            sent_at,
            client_message_id,
            duplicate,
            request_id,
        } => {
            assert!(!message_id.is_empty());
            assert_eq!(conversation_id, "team");
            assert_eq!(seq, 1);
            assert!(
                sent_at.ends_with('Z') && sent_at.contains('T'),
                "ISO-8601: {sent_at}"
            );
            assert_eq!(client_message_id.as_deref(), Some("c-1"));
            assert!(!duplicate);
            assert_eq!(request_id, Some(request));
        }
        other => panic!("expected message_sent, got {other:?}"),
    }
    for receiver in [
        &mut alice_phone,
        &mut bob_laptop,
        &mut bob_phone,
        &mut carol,
    ] {
        let message = next_new_message(receiver).await;
        assert_eq!(message.content, "hello team");
        assert_eq!(message.sender, "alice");
        assert_eq!(message.conversation_id, "team");
        assert_eq!(message.content_type, "text");
        assert_eq!(message.seq, 1);
        assert_eq!(message.client_message_id.as_deref(), Some("c-1"));
    }

    // Dave shares another conversation with alice: the first message he sees
    // must be the one sent there, not the team's.
    send(&mut alice, "pair", "just for dave").await;
    assert_eq!(next_new_message(&mut dave).await.content, "just for dave");
    // Eve shares nothing; every delivery above has happened, so anything
    // meant for her would already be on its way.
    assert_silent(&mut eve, Duration::from_millis(300)).await;
    // The sending connection gets its ack, not a copy of its own message.
    assert_silent(&mut alice, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_retried_client_message_id_is_stored_once() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;

    let mut acks = Vec::new();
    for _ in 0..2 {
        alice
            .send_message("team", "only once", Some("retry-1"))
            .await
            .expect("send");
        match next_message_frame(&mut alice).await {
            ServerFrame::MessageSent {
                message_id,
                seq,
                duplicate,
                ..
            } => acks.push((message_id, seq, duplicate)),
            other => panic!("expected message_sent, got {other:?}"),
        }
    }
    assert_eq!(acks[0].0, acks[1].0, "same messageId");
    assert_eq!(acks[0].1, acks[1].1, "same seq");
    assert_eq!(
        (acks[0].2, acks[1].2),
        (false, true),
        "the retry is flagged duplicate"
    );

    // Bob got it once: the next thing he sees is the following message.
    assert_eq!(next_new_message(&mut bob).await.content, "only once");
    let (_, seq) = send(&mut alice, "team", "next").await;
    assert_eq!(seq, 2, "no seq was spent on the duplicate");
    assert_eq!(next_new_message(&mut bob).await.content, "next");

    // The same clientMessageId from another sender is another message.
    bob.send_message("team", "mine", Some("retry-1"))
        .await
        .expect("send");
    match next_message_frame(&mut bob).await {
        ServerFrame::MessageSent { duplicate, seq, .. } => assert_eq!((duplicate, seq), (false, 3)),
        other => panic!("expected message_sent, got {other:?}"),
    }
}

#[tokio::test]
async fn concurrent_senders_get_gapless_seqs_seen_in_order_everywhere() {
    const SENDERS: usize = 8;
    const EACH: usize = 200;
    let server = TestServer::start_with(|c| c.rate_limit_per_minute = 0).await;
    let senders: Vec<String> = (0..SENDERS).map(|i| format!("s{i}")).collect();
    let mut members: Vec<&str> = senders.iter().map(String::as_str).collect();
    members.extend(["r0", "r1"]);
    for user in &members {
        server
            .store
            .add_user(NewUser {
                id: uid(user),
                name: None,
            })
            .await
            .expect("user");
    }
    create_conversation(&server.store, "crowd", &members).await;

    let mut receivers = Vec::new();
    for r in ["r0", "r1"] {
        receivers.push(server.connect(r).await);
    }
    // Everyone is connected before anyone sends.
    let mut clients = Vec::new();
    for sender in senders {
        clients.push((server.connect(&sender).await, sender));
    }
    let mut tasks = Vec::new();
    for (mut client, sender) in clients {
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                client
                    .send_message(
                        "crowd",
                        &format!("{sender} {i}"),
                        Some(&format!("{sender}-{i}")),
                    )
                    .await
                    .expect("send");
            }
            // Every frame this sender gets: its acks and the others' messages.
            let (mut acked, mut seen) = (Vec::new(), Vec::new());
            while acked.len() < EACH || seen.len() < (SENDERS - 1) * EACH {
                match next_message_frame(&mut client).await {
                    ServerFrame::MessageSent { seq, .. } => acked.push(seq),
                    ServerFrame::NewMessage { message, .. } => seen.push(message.seq),
                    other => panic!("unexpected {other:?}"),
                }
            }
            (acked, seen)
        }));
    }
    let mut all_acked = Vec::new();
    for task in tasks {
        let (acked, seen) = task.await.expect("sender");
        assert!(acked.windows(2).all(|w| w[0] < w[1]), "acks in seq order");
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "live messages in seq order"
        );
        all_acked.extend(acked);
    }
    all_acked.sort_unstable();
    let expected: Vec<i64> = (1..=(SENDERS * EACH) as i64).collect();
    assert_eq!(all_acked, expected, "seq 1..=1600, gapless, each once");

    for mut receiver in receivers {
        let mut seqs = Vec::new();
        while seqs.len() < SENDERS * EACH {
            seqs.push(next_new_message(&mut receiver).await.seq);
        }
        assert_eq!(
            seqs, expected,
            "a receiver sees every message, in seq order"
        );
    }
    let distinct: HashSet<_> = all_acked.iter().collect();
    assert_eq!(distinct.len(), SENDERS * EACH);
}

#[tokio::test]
async fn content_type_and_unicode_round_trip_byte_exact() {
    let server = TestServer::start().await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;
    let tricky = [
        "emoji 👩‍👩‍👧‍👦🎉 and flags 🇯🇵",
        "RTL: مرحبا بالعالم שלום",
        "NUL \u{0} inside \u{0}",
        "'); DROP TABLE messages; --",
        "{\"$ne\": null}",
        "line\nbreaks\r\nand\ttabs \\ \"quotes\"",
    ];
    for content in tricky {
        send(&mut alice, "team", content).await;
        assert_eq!(next_new_message(&mut bob).await.content, content);
    }
    alice
        .send_json(&serde_json::json!({
            "type": "send_message", "conversationId": "team",
            "content": "{\"w\":1}", "contentType": "application/json"
        }))
        .await
        .expect("send");
    assert_eq!(
        next_new_message(&mut bob).await.content_type,
        "application/json"
    );

    // And the same bytes come back from the store.
    let mut carol = server.connect("carol").await;
    carol
        .send_json(&serde_json::json!({"type": "sync", "cursors": {"team": 0}}))
        .await
        .expect("sync");
    for content in tricky {
        assert_eq!(next_new_message(&mut carol).await.content, content);
    }
}
