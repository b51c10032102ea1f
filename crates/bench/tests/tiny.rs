//! The benchmark tool must not rot: a tiny configuration of every scenario,
//! against natter and the Socket.IO peer, must deliver every message. No
//! timing is asserted: the machines running tests are shared and noisy.

use std::{path::Path, process::Command};

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root")
}

#[test]
fn every_scenario_delivers_everything_on_both_peers() {
    let out = tempfile::tempdir().expect("temp dir");
    let status = Command::new(env!("CARGO_BIN_EXE_natter-bench"))
        .args(["all", "--tiny", "--peer", "both", "--require-delivery"])
        .arg("--out")
        .arg(out.path())
        .arg("--socketio-dir")
        .arg(repo_root().join("bench/peers/socketio"))
        .status()
        .expect("run natter-bench");
    assert!(
        status.success(),
        "natter-bench reported lost messages or failed runs"
    );

    for scenario in ["idle", "fanout", "latency", "dm", "bigroom", "ramp"] {
        for peer in ["natter", "socketio"] {
            let path = out.path().join(format!("{scenario}-{peer}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let result: serde_json::Value = serde_json::from_str(&text).expect("JSON result");
            let count = |field: &str| {
                result[field]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{field} in {scenario}-{peer}"))
            };
            assert!(count("connections") > 0, "{scenario}-{peer} connected");
            if scenario != "idle" {
                assert!(count("expected_deliveries") > 0, "{scenario}-{peer} sent");
                assert_eq!(
                    count("deliveries"),
                    count("expected_deliveries"),
                    "{scenario}-{peer}"
                );
                assert_eq!(count("acks"), count("sends"), "{scenario}-{peer} acks");
            }
        }
    }
    let summary = std::fs::read_to_string(out.path().join("summary.md")).expect("summary");
    assert!(summary.contains("| fanout | natter |") && summary.contains("| fanout | socketio |"));
}
