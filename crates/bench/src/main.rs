//! `natter-bench`: natter's reproducible benchmark.
//!
//! It starts the server under test itself (natter on a fresh SQLite file,
//! provisioned through `natter import`; or the Socket.IO peer under
//! `bench/peers/socketio`), or drives natter servers already running
//! (`--url`, e.g. a cluster's instances), pins the server to one core and
//! itself to the other,
//! opens the connections from several loopback addresses, runs open-loop
//! scenarios and writes, per run, a JSON file; then a Markdown summary with
//! the natter / Socket.IO ratios, and charts.

mod charts;
mod recorder;
mod report;
mod results;
mod scenario;
mod server;
mod transport;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

use crate::{
    results::RunResult,
    scenario::{Context, bigroom::BigRoom, dm::Dm, fanout::Fanout, idle::Idle, ramp::Ramp},
    transport::Peer,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Idle,
    Fanout,
    /// `fanout` at 2,000 sends/s into groups of 10: the latency at a
    /// moderate load.
    Latency,
    Dm,
    Bigroom,
    Ramp,
    /// Every scenario, in this order.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Peers {
    Natter,
    Socketio,
    Both,
}

#[derive(Debug, Parser)]
#[command(
    name = "natter-bench",
    about = "Benchmarks natter side by side with a Socket.IO peer"
)]
struct Cli {
    scenario: Scenario,
    /// Which servers to run the scenario against.
    #[arg(long, value_enum, default_value_t = Peers::Both)]
    peer: Peers,
    /// A tiny configuration of each scenario (for the test suite).
    #[arg(long)]
    tiny: bool,
    /// Where results, the summary and charts go.
    #[arg(long, default_value = "bench/results/latest")]
    out: PathBuf,
    /// The `natter` binary (default: next to this one).
    #[arg(long)]
    natter_bin: Option<PathBuf>,
    /// The Socket.IO peer's directory.
    #[arg(long, default_value = "bench/peers/socketio")]
    socketio_dir: PathBuf,
    /// natter's database URL (default: a fresh SQLite file per run).
    #[arg(long)]
    database_url: Option<String>,
    /// A natter server already running, e.g. `ws://10.0.0.5:3000`; repeat
    /// it for several instances, which the connections are spread over.
    /// The tool then starts no server: it provisions users and
    /// conversations with `natter import --database-url` (required), signs
    /// tokens with `JWT_SECRET` from the environment, and reports no server
    /// CPU or memory. natter only.
    #[arg(long = "url", value_name = "URL")]
    urls: Vec<String>,
    /// Pin the server to this core and the tool to the other (taskset).
    #[arg(long)]
    server_core: Option<usize>,
    /// Fail (exit 1) if any run lost messages or connections: for tests.
    #[arg(long)]
    require_delivery: bool,
    #[command(flatten)]
    idle: Idle,
    #[command(flatten)]
    fanout: Fanout,
    #[command(flatten)]
    dm: Dm,
    #[command(flatten)]
    bigroom: BigRoom,
    #[command(flatten)]
    ramp: Ramp,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(core) = cli.server_core {
        // The tool takes the other core of a two-core machine.
        let other = if core == 0 { 1 } else { 0 };
        let _ = std::process::Command::new("taskset")
            .args(["-cp", &other.to_string(), &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status();
    }
    // One core for the tool: one thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let natter_bin = match &cli.natter_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("the tool's directory")?
            .join("natter"),
    };
    let external = if cli.urls.is_empty() {
        None
    } else {
        if cli.peer != Peers::Natter {
            anyhow::bail!("--url drives natter servers: add --peer natter");
        }
        let secret = std::env::var("JWT_SECRET")
            .ok()
            .filter(|s| !s.is_empty())
            .context("--url needs the servers' JWT_SECRET in the environment")?;
        let database_url = cli
            .database_url
            .clone()
            .context("--url needs --database-url: the servers' database, to provision")?;
        let addrs = cli
            .urls
            .iter()
            .map(|url| server::parse_url(url))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Some(server::External {
            addrs,
            secret,
            database_url,
        })
    };
    let options = server::Options {
        natter_bin,
        socketio_dir: cli.socketio_dir.clone(),
        database_url: cli.database_url.clone(),
        core: cli.server_core,
        external,
    };
    let peers: &[Peer] = match cli.peer {
        Peers::Natter => &[Peer::Natter],
        Peers::Socketio => &[Peer::Socketio],
        Peers::Both => &[Peer::Natter, Peer::Socketio],
    };
    let scenarios: &[Scenario] = match cli.scenario {
        Scenario::All => &[
            Scenario::Idle,
            Scenario::Fanout,
            Scenario::Latency,
            Scenario::Dm,
            Scenario::Bigroom,
            Scenario::Ramp,
        ],
        one => std::slice::from_ref(match one {
            Scenario::Idle => &Scenario::Idle,
            Scenario::Fanout => &Scenario::Fanout,
            Scenario::Latency => &Scenario::Latency,
            Scenario::Dm => &Scenario::Dm,
            Scenario::Bigroom => &Scenario::Bigroom,
            _ => &Scenario::Ramp,
        }),
    };
    std::fs::create_dir_all(&cli.out).with_context(|| format!("create {}", cli.out.display()))?;
    let mut failures = Vec::new();
    for scenario in scenarios {
        for peer in peers {
            let ctx = Context {
                peer: *peer,
                options: options.clone(),
            };
            eprintln!("running {scenario:?} against {}", peer.name());
            let result = run_one(&cli, *scenario, &ctx).await;
            match result {
                Ok(result) => {
                    eprintln!("{}", report::one_line(&result));
                    if result.loss > 0 || result.errors > 0 {
                        failures.push(format!(
                            "{} on {}: {} lost, {} errors",
                            result.scenario, result.peer, result.loss, result.errors
                        ));
                    }
                    let file = cli
                        .out
                        .join(format!("{}-{}.json", result.scenario, result.peer));
                    std::fs::write(&file, serde_json::to_string_pretty(&result)?)?;
                }
                Err(e) => failures.push(format!("{scenario:?} on {}: {e:#}", peer.name())),
            }
        }
    }
    let results = report::load(&cli.out)?;
    std::fs::write(cli.out.join("summary.md"), report::summary(&results))?;
    if let Err(e) = charts::draw(&results, &cli.out) {
        eprintln!("charts: {e:#}");
    }
    for failure in &failures {
        eprintln!("FAILED: {failure}");
    }
    if cli.require_delivery && !failures.is_empty() {
        anyhow::bail!("{} run(s) failed", failures.len());
    }
    Ok(())
}

async fn run_one(cli: &Cli, scenario: Scenario, ctx: &Context) -> anyhow::Result<RunResult> {
    let tiny = cli.tiny;
    match scenario {
        Scenario::Idle => {
            if tiny { Idle::tiny() } else { cli.idle.clone() }
                .run(ctx)
                .await
        }
        Scenario::Fanout => {
            if tiny {
                Fanout::tiny()
            } else {
                cli.fanout.clone()
            }
            .run(ctx)
            .await
        }
        Scenario::Latency => {
            let mut latency = if tiny {
                Fanout::tiny()
            } else {
                cli.fanout.clone()
            };
            if !tiny {
                latency.rate = 2_000.0;
            }
            let mut result = latency.run(ctx).await?;
            result.scenario = "latency".to_string();
            Ok(result)
        }
        Scenario::Dm => {
            if tiny { Dm::tiny() } else { cli.dm.clone() }
                .run(ctx)
                .await
        }
        Scenario::Bigroom => {
            if tiny {
                BigRoom::tiny()
            } else {
                cli.bigroom.clone()
            }
            .run(ctx)
            .await
        }
        Scenario::Ramp => {
            if tiny { Ramp::tiny() } else { cli.ramp.clone() }
                .run(ctx)
                .await
        }
        Scenario::All => anyhow::bail!("`all` is expanded before running"),
    }
}
