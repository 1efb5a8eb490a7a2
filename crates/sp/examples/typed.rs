//! Starts a child (this same binary), sends it typed values with a few file descriptors among
//! them, and prints what the child verified.
//!
//! ```sh
//! cargo run --release -p sp --example typed              # 1,000,000 values
//! cargo run --release -p sp --example typed -- --count 5000000 --fd-every 250000
//! ```

use std::io::{Read, Seek, Write};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use serde::{Deserialize, Serialize};

/// A unit of work: what the parent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    id: u64,
    name: String,
    weights: Vec<u32>,
}

/// What the child found: its one reply.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    values: u64,
    values_checked: u64,
    descriptors: u64,
    descriptors_checked: u64,
    first_error: Option<String>,
}

#[derive(Debug, Parser)]
struct Args {
    /// How many values to send.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Every this many values, one carries a file descriptor.
    #[arg(long, default_value_t = 200_000)]
    fd_every: u64,
    /// Internal: run as the child.
    #[arg(long, hide = true)]
    child: bool,
}

fn job(id: u64) -> Job {
    Job {
        id,
        name: format!("job-{id:08}"),
        weights: (0..4)
            .map(|i| (id as u32).wrapping_mul(7).wrapping_add(i))
            .collect(),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.child {
        return child(&args);
    }
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--child")
        .arg("--count")
        .arg(args.count.to_string())
        .arg("--fd-every")
        .arg(args.fd_every.to_string());
    // The parent sends `Job`s and receives one `Report`.
    let (mut child, mut jobs, mut reports) =
        sp::spawn::<Job, Report>(&mut cmd, &sp::Config::new()).context("starting the child")?;
    let started = Instant::now();
    let mut n_fds = 0;
    for id in 0..args.count {
        if args.fd_every > 0 && id.is_multiple_of(args.fd_every) {
            // A file whose contents name the value it travels with.
            let mut file = memfd()?;
            write!(file, "attached to job {id}")?;
            jobs.send_with_fds(&job(id), &[file.as_fd()])?;
            n_fds += 1;
        } else {
            jobs.send(&job(id))?;
        }
    }
    drop(jobs); // end of stream: the child sees PeerGone after the last value
    let elapsed = started.elapsed();
    let report = reports.recv().context("the child's report")?;
    let status = child.wait()?;
    println!(
        "parent: sent {} values ({} with a descriptor) in {:.2?} ({:.2} M values/s)",
        args.count,
        n_fds,
        elapsed,
        args.count as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!(
        "child verified {} of {} values and {} of {} descriptors; the child {status}",
        report.values_checked, report.values, report.descriptors_checked, report.descriptors
    );
    if let Some(err) = report.first_error {
        bail!("the child found an error: {err}");
    }
    if report.values_checked != args.count || report.descriptors_checked != n_fds {
        bail!("the child did not verify everything");
    }
    Ok(())
}

fn child(args: &Args) -> anyhow::Result<()> {
    let (mut reports, mut jobs) = sp::adopt::<Report, Job>(&sp::Config::new())?;
    let mut report = Report {
        values: 0,
        values_checked: 0,
        descriptors: 0,
        descriptors_checked: 0,
        first_error: None,
    };
    loop {
        let (value, fds) = match jobs.recv_with_fds() {
            Ok(received) => received,
            Err(sp::Error::PeerGone) => break,
            Err(err) => return Err(err.into()),
        };
        let id = report.values;
        report.values += 1;
        report.descriptors += fds.len() as u64;
        if value == job(id) {
            report.values_checked += 1;
        } else if report.first_error.is_none() {
            report.first_error = Some(format!("value {id}: {value:?}"));
        }
        for fd in fds {
            let mut text = String::new();
            let mut file = std::fs::File::from(fd);
            file.rewind()?;
            file.read_to_string(&mut text)?;
            if text == format!("attached to job {id}")
                && args.fd_every > 0
                && id.is_multiple_of(args.fd_every)
            {
                report.descriptors_checked += 1;
            } else if report.first_error.is_none() {
                report.first_error = Some(format!("value {id}: descriptor says {text:?}"));
            }
        }
    }
    reports.send(&report)?;
    Ok(())
}

fn memfd() -> anyhow::Result<std::fs::File> {
    let fd = rustix::fs::memfd_create("sp-example", rustix::fs::MemfdFlags::CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}
