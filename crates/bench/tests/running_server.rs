//! `--url`: the tool drives a natter server it did not start (as it will a
//! cluster's instances), provisions it through the shared database, and
//! leaves it running. No timing is asserted.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command},
    time::{Duration, Instant},
};

const SECRET: &str = "running-server-test-secret";

/// natter, built next to natter-bench.
fn natter_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_natter-bench")).with_file_name("natter")
}

/// Kills the server however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_running_server_is_driven_and_left_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite://{}", dir.path().join("natter.db").display());
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut server = Running(
        Command::new(natter_bin())
            .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--database-url", &database, "--rate-limit-per-minute", "0"])
            .env("JWT_SECRET", SECRET)
            .spawn()
            .expect("start natter"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "natter did not start");
        std::thread::sleep(Duration::from_millis(20));
    }

    let out = dir.path().join("results");
    let status = Command::new(env!("CARGO_BIN_EXE_natter-bench"))
        .args(["fanout", "--tiny", "--peer", "natter", "--require-delivery"])
        .args(["--url", &format!("ws://127.0.0.1:{port}")])
        .args(["--database-url", &database])
        .arg("--out")
        .arg(&out)
        .env("JWT_SECRET", SECRET)
        .status()
        .expect("run natter-bench");
    assert!(
        status.success(),
        "natter-bench failed against a running server"
    );

    let text = std::fs::read_to_string(out.join("fanout-natter.json")).expect("the result");
    let result: serde_json::Value = serde_json::from_str(&text).expect("JSON result");
    let count = |field: &str| result[field].as_u64().expect(field);
    assert!(count("expected_deliveries") > 0);
    assert_eq!(count("deliveries"), count("expected_deliveries"));
    assert_eq!(count("acks"), count("sends"));
    assert_eq!(result["server_observed"], false, "its process is not ours");
    assert!(
        server.0.try_wait().expect("server status").is_none(),
        "the tool left the server running"
    );

    // Without the secret the tool refuses, rather than minting tokens the
    // server rejects.
    let refused = Command::new(env!("CARGO_BIN_EXE_natter-bench"))
        .args(["fanout", "--tiny", "--peer", "natter"])
        .args(["--url", &format!("ws://127.0.0.1:{port}")])
        .args(["--database-url", &database])
        .arg("--out")
        .arg(&out)
        .env_remove("JWT_SECRET")
        .output()
        .expect("run natter-bench");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("JWT_SECRET"));
}
