//! The `sp-bench` binary: runs the benchmark, writes `results.json` and `throughput.svg`, prints
//! the table, and compares with a saved baseline. Started with [`sp_bench::PEER_ARG`] it plays the
//! child side of one measurement instead.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sp_bench::plan::{Config, Progress};
use sp_bench::report::{Machine, Probe, Results, change_table, compare};
use sp_bench::size::{fmt_size, parse_size};
use sp_bench::{PEER_ARG, Transport};

/// Cross-process benchmarks of sp against the kernel's transports, other IPC crates and the
/// machine's limits.
#[derive(Debug, Parser)]
#[command(name = "sp-bench")]
struct Cli {
    /// All sizes (64 B to 16 MiB), seven interleaved pairs per cell, longer rounds.
    #[arg(long)]
    full: bool,
    /// Only these transports (repeat or separate with commas); see --list.
    #[arg(long = "transport", value_delimiter = ',')]
    transports: Vec<String>,
    /// Only these message sizes: 64, 1k, 64k, 1m, ... (repeat or separate with commas).
    #[arg(long = "size", value_delimiter = ',', value_parser = parse_size)]
    sizes: Vec<usize>,
    /// Interleaved pairs per cell (default 3 quick, 7 full).
    #[arg(long)]
    reps: Option<usize>,
    /// Measured round length in milliseconds (default 120 quick, 400 full).
    #[arg(long)]
    duration_ms: Option<u64>,
    /// Where results.json, throughput.svg and baselines/ go.
    #[arg(long, default_value = "target/sp-bench")]
    out: PathBuf,
    /// Also store this run as baselines/NAME.json.
    #[arg(long, value_name = "NAME")]
    save_baseline: Option<String>,
    /// Compare with baselines/NAME.json and flag figures more than --threshold worse.
    #[arg(long, value_name = "NAME")]
    baseline: Option<String>,
    /// Regression threshold in percent for --baseline.
    #[arg(long, default_value_t = 10.0)]
    threshold: f64,
    /// List the transports and exit.
    #[arg(long)]
    list: bool,
    /// Print the table of an existing results file and exit.
    #[arg(long, value_name = "FILE")]
    show: Option<PathBuf>,
}

fn main() -> Result<()> {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == PEER_ARG)
    {
        if let Err(err) = sp_bench::peer_main() {
            eprintln!("sp-bench peer: {err}");
            std::process::exit(1);
        }
        return Ok(());
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|arg| arg == sp_bench::SCENARIO_ARG)
    {
        let args: Vec<String> = std::env::args().skip(2).collect();
        if let Err(err) = sp_bench::scenario_main(&args) {
            eprintln!("sp-bench scenario child: {err}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let cli = Cli::parse();
    if cli.list {
        for t in Transport::ALL {
            let status = t.unavailable().unwrap_or_else(|| "available".into());
            println!("{:<18} {status}", t.name());
        }
        return Ok(());
    }
    if let Some(path) = &cli.show {
        let results = Results::load(path).with_context(|| format!("reading {}", path.display()))?;
        print_results(&results);
        return Ok(());
    }
    let config = config(&cli)?;
    let exe = std::env::current_exe().context("finding the sp-bench executable")?;
    let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let machine = Machine::detect();
    sp_bench::pin_driver();
    sp_bench::cleanup_peer_files();

    let mut cells = config.cells();
    let total: u64 = cells.iter().map(|c| config.runs_per_cell(c)).sum();
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:32}] {pos}/{len} {msg}")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut done = 0;
    for cell in &mut cells {
        bar.set_message(format!(
            "{} {} {:?}",
            cell.transport.name(),
            fmt_size(cell.size as u64),
            cell.mode
        ));
        cell.run(&config, &exe, &mut |progress| match progress {
            Progress::Measured => bar.inc(1),
            Progress::Redo(n) => bar.inc_length(n),
        });
        done += config.runs_per_cell(cell) + cell.redone.len() as u64 * cell.runs_per_rep();
        bar.set_position(done);
    }
    let mut probes: Vec<f64> = cells.iter().filter_map(|c| c.probe_ns).collect();
    if let Ok(ns) = sp_bench::probe(config.probe) {
        probes.push(ns);
    }
    bar.finish_and_clear();
    sp_bench::cleanup_peer_files();
    eprintln!("measured in {:.0?}", started.elapsed());

    let probe = Probe::new(probes).with_timer(sp_bench::timer_overhead_ns(100_000));
    let results = Results::build(&config, date, machine, probe, &cells);
    let json = cli.out.join("results.json");
    results
        .save(&json)
        .with_context(|| format!("writing {}", json.display()))?;
    let svg = cli.out.join("throughput.svg");
    if let Err(err) = sp_bench::chart::write_svg(&results, &svg) {
        eprintln!("no chart: {err}");
    }
    print_results(&results);
    println!();
    println!("results: {}", json.display());
    println!("chart:   {}", svg.display());

    if let Some(name) = &cli.save_baseline {
        let path = baseline_path(&cli, name)?;
        results
            .save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("saved baseline {name}: {}", path.display());
    }
    if let Some(name) = &cli.baseline {
        let path = baseline_path(&cli, name)?;
        let before = Results::load(&path).with_context(|| format!("reading {}", path.display()))?;
        let changes = compare(&before, &results, cli.threshold / 100.0);
        let n_worse = changes.iter().filter(|c| c.gain < 0.0).count();
        println!();
        println!(
            "against baseline {name} ({}): {} figures moved more than {}%, {n_worse} of them worse",
            before.date,
            changes.len(),
            cli.threshold
        );
        if !changes.is_empty() {
            println!("{}", change_table(&changes));
        }
    }
    Ok(())
}

fn config(cli: &Cli) -> Result<Config> {
    let mut config = if cli.full {
        Config::full()
    } else {
        Config::quick()
    };
    if !cli.transports.is_empty() {
        config.transports = cli
            .transports
            .iter()
            .map(|name| {
                Transport::from_name(name)
                    .with_context(|| format!("unknown transport {name:?}; see --list"))
            })
            .collect::<Result<_>>()?;
    }
    if !cli.sizes.is_empty() {
        if cli.sizes.iter().any(|&s| s < 8) {
            bail!("messages are at least 8 bytes (they carry a sequence number)");
        }
        config.sizes.clone_from(&cli.sizes);
    }
    if let Some(reps) = cli.reps {
        config.reps = reps.max(1);
    }
    if let Some(ms) = cli.duration_ms {
        config.duration = Duration::from_millis(ms.max(1));
    }
    Ok(config)
}

fn baseline_path(cli: &Cli, name: &str) -> Result<PathBuf> {
    if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
        bail!("a baseline name is a plain file name, not {name:?}");
    }
    Ok(cli.out.join("baselines").join(format!("{name}.json")))
}

fn print_results(results: &Results) {
    println!("{}", results.header());
    println!();
    println!("{}", results.table());
    let rivals = results.rival_notes();
    if !rivals.is_empty() {
        println!();
        println!(
            "Against their rival, measured in the same repetitions (baseline, rival, transport; \
             the median of the pair ratios; ×limit of the ring rows is this ratio):"
        );
        for note in &rivals {
            println!("- {note}");
        }
    }
    let collapses = results.collapse_notes();
    if !collapses.is_empty() {
        println!();
        println!(
            "Collapsed (! above): the median is below half the best repetition (above twice the \
             best for rtt p50):"
        );
        for note in &collapses {
            println!("- {note}");
        }
    }
    if !results.notes.is_empty() {
        println!();
        println!("Not measured or failed:");
        for note in &results.notes {
            println!("- {note}");
        }
    }
}
