//! Project automation: `cargo xtask <command>` (the alias lives in `.cargo/config.toml`).
//!
//! - `cargo xtask ci`: the same gates as `.ci/run` (fmt, clippy, tests, loom models, docs), in that
//!   order.
//! - `cargo xtask bench`: builds `sp-bench` in release and runs it (a quick comparison by default;
//!   see docs/benchmarks.md). The measuring, the table, the chart and the baselines live in
//!   sp-bench; this task only builds, finds the target directory and passes the options on.
//! - `cargo xtask soak`: the cross-process ring for a set time (default 10 minutes), failing on
//!   any lost or corrupted record or leaked descriptor.
//! - `cargo xtask fuzz`: the optional cargo-fuzz targets in `fuzz/` (nightly and cargo-fuzz).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

/// sp's project tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "sp project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the CI gates (`.ci/run`): fmt, clippy with warnings denied (also with the tokio and
    /// zenoh features), the tests, the loom models, fuzz/ on stable, docs with warnings denied.
    Ci,
    /// Build sp-bench in release and run the benchmark (quick by default); results go to
    /// `<target>/sp-bench/results.json` and `throughput.svg`.
    Bench(BenchArgs),
    /// Stream records both ways between two processes through the sp-shm ring for a set time,
    /// with sequence numbers and checksums; fails on any loss, corruption or descriptor leak.
    Soak(SoakArgs),
    /// Run the optional cargo-fuzz targets in `fuzz/` (needs the nightly toolchain and
    /// `cargo install cargo-fuzz`; never part of CI).
    Fuzz(FuzzArgs),
}

/// Options of `cargo xtask soak`, passed on to the soak example.
#[derive(Debug, Args)]
struct SoakArgs {
    /// How long to run, for example 90s, 10m, 2h.
    #[arg(long, default_value = "10m")]
    duration: String,
    /// How an idle side waits: spin, adaptive or park.
    #[arg(long, default_value = "adaptive")]
    idle: String,
    /// Also print the summary as one JSON line.
    #[arg(long)]
    json: bool,
}

/// Options of `cargo xtask fuzz`.
#[derive(Debug, Args)]
struct FuzzArgs {
    /// The targets to run (default: all of them, one after the other).
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

/// The cargo-fuzz targets in `fuzz/Cargo.toml`.
const FUZZ_TARGETS: [&str; 4] = [
    "ring_hostile_image",
    "frame_decoder",
    "offer_decoder",
    "blob_decoder",
];

/// Options of `cargo xtask bench`, passed on to the sp-bench binary.
#[derive(Debug, Args)]
struct BenchArgs {
    /// All sizes (64 B to 16 MiB), more repetitions, longer rounds.
    #[arg(long)]
    full: bool,
    /// Only these transports (repeat or separate with commas; `--transport list` lists them).
    #[arg(long = "transport", value_delimiter = ',')]
    transports: Vec<String>,
    /// Only these message sizes: 64, 1k, 64k, 1m, ... (repeat or separate with commas).
    #[arg(long = "size", value_delimiter = ',')]
    sizes: Vec<String>,
    /// Store this run as `<target>/sp-bench/baselines/NAME.json`.
    #[arg(long, value_name = "NAME")]
    save_baseline: Option<String>,
    /// Compare with a saved baseline and flag figures more than 10% worse.
    #[arg(long, value_name = "NAME")]
    baseline: Option<String>,
    /// Build without the peer crates (ipc-channel, iceoryx2, ipmpsc) and zenoh.
    #[arg(long)]
    no_peers: bool,
    /// Further sp-bench options, after `--` (see `sp-bench --help`).
    #[arg(last = true)]
    rest: Vec<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Task::Ci => ci(),
        Task::Bench(args) => bench(&args),
        Task::Soak(args) => soak(&args),
        Task::Fuzz(args) => fuzz(&args),
    }
}

/// The repository root: xtask lives one level below it.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// `$CARGO`, as cargo sets it for `cargo run`, or plain `cargo`.
fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

fn run(step: &str, mut cmd: Command) -> Result<()> {
    eprintln!("==> {step}");
    let status = cmd.status().with_context(|| format!("starting {step}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

/// The CI gates are `.ci/run` itself (one list, so the two cannot drift apart).
fn ci() -> Result<()> {
    let mut gates = Command::new("bash");
    gates
        .arg(root().join(".ci").join("run"))
        .current_dir(root());
    run(".ci/run", gates)
}

fn bench(args: &BenchArgs) -> Result<()> {
    let mut build = cargo();
    build.args(["build", "--release", "-p", "sp-bench"]);
    // The async rows (tokio) are ours and light; the peers and zenoh are the long part of a build.
    build.args([
        "--features",
        if args.no_peers {
            "tokio"
        } else {
            "tokio,peers,zenoh"
        },
    ]);
    run("cargo build --release -p sp-bench", build)?;

    let target = target_dir();
    let mut bench = Command::new(target.join("release").join("sp-bench"));
    bench
        .current_dir(root())
        .arg("--out")
        .arg(target.join("sp-bench"));
    if args.transports.iter().any(|t| t == "list") {
        bench.arg("--list");
        return run("sp-bench --list", bench);
    }
    if args.full {
        bench.arg("--full");
    }
    for transport in &args.transports {
        bench.args(["--transport", transport]);
    }
    for size in &args.sizes {
        bench.args(["--size", size]);
    }
    if let Some(name) = &args.save_baseline {
        bench.args(["--save-baseline", name]);
    }
    if let Some(name) = &args.baseline {
        bench.args(["--baseline", name]);
    }
    bench.args(&args.rest);
    run("sp-bench", bench)
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the root if relative) or `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

fn soak(args: &SoakArgs) -> Result<()> {
    let mut soak = cargo();
    soak.args([
        "run",
        "--release",
        "-p",
        "sp-shm",
        "--example",
        "soak",
        "--",
    ])
    .args(["--duration", &args.duration, "--idle", &args.idle]);
    if args.json {
        soak.arg("--json");
    }
    run("soak", soak)
}

fn fuzz(args: &FuzzArgs) -> Result<()> {
    let probe = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .current_dir(root().join("fuzz"))
        .output();
    if !probe.is_ok_and(|out| out.status.success()) {
        bail!(
            "cargo fuzz needs the nightly toolchain and cargo-fuzz: \
             `rustup toolchain install nightly && cargo install cargo-fuzz`"
        );
    }
    let targets: Vec<&str> = if args.targets.is_empty() {
        FUZZ_TARGETS.to_vec()
    } else {
        args.targets.iter().map(String::as_str).collect()
    };
    for target in targets {
        // Not `$CARGO`: that is the pinned stable cargo, and the fuzz build needs nightly.
        let mut fuzz = Command::new("cargo");
        fuzz.current_dir(root().join("fuzz"))
            .args(["+nightly", "fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={}", args.seconds));
        run(&format!("fuzz {target}"), fuzz)?;
    }
    Ok(())
}
