//! Presence: online with the first connection, offline after the grace
//! period once the last one closes, no flap on a quick reconnect, a snapshot
//! of the contacts on connect, `lastSeen` kept; only contacts hear of it.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::*;
use natter_client::{Client, ServerFrame};

/// The next presence update: (user, status, lastSeen present).
async fn next_presence(client: &mut Client) -> (String, String, bool) {
    loop {
        match next(client).await {
            ServerFrame::PresenceUpdate {
                user_id,
                status,
                timestamp,
                last_seen,
            } => {
                assert!(timestamp > 0);
                return (user_id, status, last_seen.is_some());
            }
            ServerFrame::MessageDelivered { .. } => {}
            other => panic!("expected presence_update, got {other:?}"),
        }
    }
}

/// Connects and collects the snapshot: one update per contact.
async fn connect_with_snapshot(
    server: &TestServer,
    user: &str,
    contacts: usize,
) -> (Client, BTreeMap<String, String>) {
    let mut client = server.connect(user).await;
    let mut snapshot = BTreeMap::new();
    while snapshot.len() < contacts {
        let (contact, status, _) = next_presence(&mut client).await;
        snapshot.insert(contact, status);
    }
    (client, snapshot)
}

fn status(user: &str, status: &str) -> (String, String) {
    (user.to_string(), status.to_string())
}

#[tokio::test]
async fn a_new_connection_gets_its_contacts_presence() {
    let server = TestServer::start().await;
    let (_bob, _) = connect_with_snapshot(&server, "bob", 2).await;
    // Alice's contacts: bob and carol (team), dave (pair). Never eve.
    let (_alice, snapshot) = connect_with_snapshot(&server, "alice", 3).await;
    assert_eq!(
        snapshot.into_iter().collect::<Vec<_>>(),
        [
            status("bob", "online"),
            status("carol", "offline"),
            status("dave", "offline")
        ]
    );
}

#[tokio::test]
async fn contacts_see_online_then_offline_after_the_grace_period() {
    let server = TestServer::start_with(|c| c.presence_grace = Duration::from_millis(200)).await;
    let (mut bob, _) = connect_with_snapshot(&server, "bob", 2).await;
    let (mut eve, _) = connect_with_snapshot(&server, "eve", 0).await;
    let (alice, _) = connect_with_snapshot(&server, "alice", 3).await;
    assert_eq!(
        next_presence(&mut bob).await,
        ("alice".into(), "online".into(), false)
    );

    alice.close().await.expect("close");
    assert_eq!(
        next_presence(&mut bob).await,
        ("alice".into(), "offline".into(), true)
    );
    let alice_now = server
        .store
        .user(&uid("alice"))
        .await
        .expect("read")
        .expect("alice");
    assert!(alice_now.last_seen.is_some(), "lastSeen persisted");

    // Eve shares no conversation with alice: she heard nothing of it.
    assert_silent(&mut eve, Duration::from_millis(200)).await;
    // And a later snapshot reports alice offline with her lastSeen.
    let mut carol = server.connect("carol").await;
    loop {
        let (user, state, last_seen) = next_presence(&mut carol).await;
        if user == "alice" {
            assert_eq!((state.as_str(), last_seen), ("offline", true));
            break;
        }
    }
}

#[tokio::test]
async fn a_quick_reconnect_does_not_flap() {
    let server = TestServer::start_with(|c| c.presence_grace = Duration::from_secs(60)).await;
    let (mut bob, _) = connect_with_snapshot(&server, "bob", 2).await;
    let (alice, _) = connect_with_snapshot(&server, "alice", 3).await;
    assert_eq!(
        next_presence(&mut bob).await,
        ("alice".into(), "online".into(), false)
    );
    alice.close().await.expect("close");
    let (mut alice, _) = connect_with_snapshot(&server, "alice", 3).await;
    // The next thing bob hears is alice's message, not her going or coming.
    send(&mut alice, "team", "back").await;
    match next(&mut bob).await {
        ServerFrame::NewMessage { message, .. } => assert_eq!(message.content, "back"),
        other => panic!("expected the message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_second_device_changes_nothing() {
    let server = TestServer::start_with(|c| c.presence_grace = Duration::from_millis(100)).await;
    let (mut bob, _) = connect_with_snapshot(&server, "bob", 2).await;
    let (phone, _) = connect_with_snapshot(&server, "alice", 3).await;
    assert_eq!(
        next_presence(&mut bob).await,
        ("alice".into(), "online".into(), false)
    );
    let (mut laptop, _) = connect_with_snapshot(&server, "alice", 3).await;
    phone.close().await.expect("close");
    // Still online through the laptop, long past the grace period.
    tokio::time::sleep(Duration::from_millis(400)).await;
    send(&mut laptop, "team", "still here").await;
    match next(&mut bob).await {
        ServerFrame::NewMessage { message, .. } => assert_eq!(message.content, "still here"),
        other => panic!("expected the message, got {other:?}"),
    }
}
