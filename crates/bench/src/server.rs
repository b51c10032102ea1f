//! The server under test: started by the tool itself (natter with its own
//! database, provisioned through `natter import`; or the Socket.IO peer with
//! the same data), pinned to its core, and observed through `/proc`. Or
//! natter servers already running (`--url`): provisioned the same way, but
//! neither started nor observed.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, ToSocketAddrs},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use serde_json::json;

use crate::transport::Peer;

/// Users and conversations a scenario needs.
#[derive(Debug, Default, Clone)]
pub struct Fixture {
    pub users: Vec<String>,
    /// (conversation id, members)
    pub conversations: Vec<(String, Vec<String>)>,
}

impl Fixture {
    /// The `natter import` file; the Socket.IO peer reads the same one.
    pub fn import_json(&self) -> serde_json::Value {
        json!({
            "users": self.users.iter().map(|u| json!({"id": u})).collect::<Vec<_>>(),
            "conversations": self.conversations.iter()
                .map(|(id, members)| json!({"id": id, "participants": members}))
                .collect::<Vec<_>>(),
        })
    }
}

/// Where to find and how to run the servers.
#[derive(Debug, Clone)]
pub struct Options {
    pub natter_bin: PathBuf,
    pub socketio_dir: PathBuf,
    /// natter's database; a fresh SQLite file per run when absent.
    pub database_url: Option<String>,
    /// The core the server is pinned to (`taskset`), if any.
    pub core: Option<usize>,
    /// natter servers already running, to drive instead of starting one.
    pub external: Option<External>,
}

/// natter servers the tool does not start (a cluster's instances).
#[derive(Debug, Clone)]
pub struct External {
    pub addrs: Vec<SocketAddr>,
    /// The servers' `JWT_SECRET`, to sign tokens they accept.
    pub secret: String,
    /// Their database, where the tool provisions users and conversations.
    pub database_url: String,
}

pub struct Server {
    pub peer: Peer,
    /// Where connections go, spread round-robin: one address unless
    /// several running servers were given.
    pub addrs: Vec<SocketAddr>,
    secret: String,
    /// The server process, when the tool started it: what `/proc` observes.
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

/// The address of a server given as `ws://host:port[/path]` (or plain
/// `host:port`).
pub fn parse_url(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .to_socket_addrs()
        .with_context(|| format!("server address {url:?} (ws://host:port)"))?
        .next()
        .with_context(|| format!("server address {url:?} resolves to nothing"))
}

impl Server {
    pub async fn start(peer: Peer, options: &Options, fixture: &Fixture) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let data = dir.path().join("import.json");
        std::fs::write(&data, fixture.import_json().to_string()).context("write import file")?;
        if let Some(external) = &options.external {
            import(&options.natter_bin, &data, &external.database_url)?;
            let server = Server {
                peer,
                addrs: external.addrs.clone(),
                secret: external.secret.clone(),
                child: None,
                _dir: dir,
            };
            server.wait_ready().await?;
            return Ok(server);
        }
        let secret = format!("bench-secret-{}", std::process::id());
        let port = free_port()?;
        let mut command = match peer {
            Peer::Natter => {
                let database = options.database_url.clone().unwrap_or_else(|| {
                    format!("sqlite://{}", dir.path().join("bench.db").display())
                });
                import(&options.natter_bin, &data, &database)?;
                let mut command = pinned(options.core, &options.natter_bin);
                command
                    .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--database-url", &database])
                    .args([
                        "--rate-limit-per-minute",
                        "0",
                        "--shutdown-deadline-secs",
                        "1",
                    ])
                    .env("JWT_SECRET", &secret)
                    // Measured as shipped: at its default log level, where
                    // anything the logging keeps per connection shows up.
                    .env_remove("RUST_LOG");
                command
            }
            Peer::Socketio => {
                let mut command = pinned(options.core, Path::new("node"));
                command
                    .arg(options.socketio_dir.join("server.js"))
                    .env("PORT", port.to_string())
                    .env("JWT_SECRET", &secret)
                    .env("DATA", &data);
                command
            }
        };
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("start the {} server", peer.name()))?;
        let server = Server {
            peer,
            addrs: vec![SocketAddr::from(([127, 0, 0, 1], port))],
            secret,
            child: Some(child),
            _dir: dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for addr in &self.addrs {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                if tokio::time::Instant::now() > deadline {
                    bail!("the {} server at {addr} is not listening", self.peer.name());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// The server's process, when the tool started it.
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether `/proc` sees the server: false for running servers given
    /// with `--url`, whose CPU and memory are reported as zero.
    pub fn observed(&self) -> bool {
        self.child.is_some()
    }

    /// A day-long HS256 token for `user`, as both peers verify them.
    pub fn token(&self, user: &str) -> anyhow::Result<String> {
        let exp = jsonwebtoken::get_current_timestamp() + 86_400;
        let key = jsonwebtoken::EncodingKey::from_secret(self.secret.as_bytes())?;
        Ok(jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": user, "exp": exp}),
            &key,
        )?)
    }

    /// Resident memory, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> u64 {
        let Some(pid) = self.pid() else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// User + system CPU seconds so far, from `/proc/<pid>/stat`.
    pub fn cpu_seconds(&self) -> f64 {
        let Some(pid) = self.pid() else { return 0.0 };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat_cpu(&stat).map_or(0.0, |(_, seconds)| seconds)
    }

    /// CPU seconds so far per thread name (threads of one name summed),
    /// from `/proc/<pid>/task/*/stat`: which part of the server a run's CPU
    /// went to (for natter: the tokio workers, the SQLite writer, the
    /// checkpointer).
    pub fn cpu_seconds_by_thread(&self) -> BTreeMap<String, f64> {
        let mut by_name = BTreeMap::new();
        let Some(pid) = self.pid() else {
            return by_name;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return by_name;
        };
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            if let Some((name, seconds)) = stat_cpu(&stat) {
                *by_name.entry(name).or_insert(0.0) += seconds;
            }
        }
        by_name
    }

    /// Stops a server the tool started; leaves a running one alone.
    pub fn stop(mut self) {
        let Some(child) = &mut self.child else { return };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Provisions the fixture in natter's database with `natter import`.
fn import(natter_bin: &Path, data: &Path, database: &str) -> anyhow::Result<()> {
    let status = Command::new(natter_bin)
        .arg("import")
        .arg(data)
        .args(["--database-url", database])
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("run {}", natter_bin.display()))?;
    if !status.success() {
        bail!("natter import failed");
    }
    Ok(())
}

/// The command name and user + system CPU seconds of a `/proc/.../stat`
/// line.
fn stat_cpu(stat: &str) -> Option<(String, f64)> {
    let (head, after) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    // Fields after the command name (which may contain spaces): utime and
    // stime are fields 14 and 15 of the whole line, 11 and 12 here.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    Some((name, (ticks(11)? + ticks(12)?) / clock_ticks_per_second()))
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// `program`, pinned with taskset to `core` when given, with the file limit
/// raised to the hard limit.
fn pinned(core: Option<usize>, program: &Path) -> Command {
    let mut command = Command::new("sh");
    let pin = core.map(|c| format!("taskset -c {c} ")).unwrap_or_default();
    command
        .arg("-c")
        .arg(format!("ulimit -n $(ulimit -Hn); exec {pin}\"$0\" \"$@\""))
        .arg(program);
    command
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_threads_name_and_cpu_from_its_stat_line() {
        let line = "42 (natter-sqlite-w) S 1 42 42 0 -1 4194560 9 0 0 0 150 50 0 0 20 0 9 0 7 0 0";
        let (name, seconds) = stat_cpu(line).expect("a valid line");
        assert_eq!(name, "natter-sqlite-w");
        assert!((seconds - 200.0 / clock_ticks_per_second()).abs() < 1e-9);
        assert_eq!(stat_cpu("garbage"), None);
    }
}
