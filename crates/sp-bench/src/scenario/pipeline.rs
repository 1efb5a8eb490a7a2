//! `sp-pipeline` and `sp-pipeline-relayed`: three stages, generate → pass on → check, with
//! messages of the message size. Sibling to sibling, each ring runs from one stage to the next;
//! relayed, each stage has a duplex with the parent, and two parent threads pass every message
//! from one stage's ring to the next stage's (a copy out and a copy in per hop). The stage code is
//! the same in both. The first stage sends for the round's duration; the last one writes what it
//! checked (messages, the sum of their words, the time from its first message to its last) to a
//! file the parent reads.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use sp::{Receiver, Sender};

use super::{SCENARIO_ARG, sample};
use crate::error::{Error, Result};
use crate::payload::{fill, sum};
use crate::spec::{RunSpec, Sample};

fn config(size: usize) -> sp::Config {
    let ring = (8 * (size + 64)).next_power_of_two().max(256 << 10);
    sp::Config::new().capacity(ring).max_payload(ring / 4)
}

pub(super) fn measure(spec: &RunSpec, exe: &Path, relayed: bool) -> Result<Sample> {
    let report = std::env::temp_dir().join(format!(
        "sp-bench-pipeline-{}-{}",
        std::process::id(),
        relayed
    ));
    let _ = std::fs::remove_file(&report);
    let mode = if relayed { "relayed" } else { "sibling" };
    let stage = |role: &str| {
        let mut cmd = Command::new(exe);
        cmd.args([
            SCENARIO_ARG,
            "stage",
            role,
            &spec.size.to_string(),
            &(spec.duration.as_nanos() as u64).to_string(),
            mode,
        ]);
        if role == "check" {
            cmd.arg(&report);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    };
    let config = config(spec.size);
    if relayed {
        relay(
            spec,
            &config,
            [stage("generate"), stage("pass"), stage("check")],
        )?;
    } else {
        let mut pipeline = sp::pipeline::Builder::new()
            .stage(stage("generate"))
            .stage(stage("pass"))
            .stage(stage("check"))
            .spawn(&config)?;
        pipeline.wait()?;
    }
    let text = std::fs::read_to_string(&report)?;
    let _ = std::fs::remove_file(&report);
    let fields: Vec<u64> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [n, _sum, elapsed_ns] = fields[..] else {
        return Err(Error::Child(format!("the last stage reported {text:?}")));
    };
    Ok(sample(spec, n, Duration::from_nanos(elapsed_ns)))
}

/// The relayed form: each stage connected to the parent, which passes messages on.
fn relay(spec: &RunSpec, config: &sp::Config, mut cmds: [Command; 3]) -> Result<()> {
    let mut children = Vec::new();
    let mut links = Vec::new();
    for cmd in &mut cmds {
        let (child, tx, rx) = sp::spawn::<ByteBuf, ByteBuf>(cmd, config)?;
        children.push(child);
        links.push((Some(tx), Some(rx)));
    }
    let hop = |from: Receiver<ByteBuf>, to: Sender<ByteBuf>| {
        std::thread::spawn(move || pass_on(from, to))
    };
    let a = hop(
        links[0].1.take().ok_or(Error::Child("link".into()))?,
        links[1].0.take().ok_or(Error::Child("link".into()))?,
    );
    let b = hop(
        links[1].1.take().ok_or(Error::Child("link".into()))?,
        links[2].0.take().ok_or(Error::Child("link".into()))?,
    );
    drop(links);
    let hops = [a.join(), b.join()];
    let limit = spec.limit();
    let mut failed = None;
    for child in &mut children {
        let status = wait_bounded(child, limit)?;
        if !status.success() {
            failed.get_or_insert(status);
        }
    }
    for hop in hops {
        hop.map_err(|_| Error::Child("a relay thread panicked".into()))??;
    }
    match failed {
        Some(status) => Err(Error::Child(format!("a stage exited with {status}"))),
        None => Ok(()),
    }
}

fn wait_bounded(child: &mut sp::Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            return Ok(child.wait()?);
        }
        if let Some(fd) = child.pidfd() {
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let timeout = rustix::event::Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            };
            let _ = rustix::event::poll(&mut fds, Some(&timeout));
        } else {
            std::thread::yield_now();
        }
    }
}

/// Receives from one stage and sends to the next until the first one ends.
fn pass_on(mut from: Receiver<ByteBuf>, mut to: Sender<ByteBuf>) -> Result<()> {
    loop {
        match from.recv() {
            Ok(msg) => to.send(&msg)?,
            Err(sp::Error::PeerGone) => return Ok(()),
            Err(err) => return Err(err.into()),
        }
    }
}

/// A stage's process: its input and output, from the pipeline or from the parent.
pub(super) fn stage(
    role: &str,
    size: usize,
    duration: Duration,
    mode: &str,
    report: Option<&str>,
) -> Result<()> {
    let config = config(size);
    let (input, output) = if mode == "relayed" {
        let (tx, rx) = sp::adopt::<ByteBuf, ByteBuf>(&config)?;
        (Some(rx), Some(tx))
    } else {
        let mut stage = sp::pipeline::join::<ByteBuf, ByteBuf>(&config)?;
        (stage.take_input(), stage.take_output())
    };
    match role {
        "generate" => {
            let mut output = output.ok_or(Error::Child("no output".into()))?;
            let started = Instant::now();
            let mut msg = ByteBuf::from(vec![0u8; size]);
            let mut seq = 0;
            while started.elapsed() < duration {
                fill(&mut msg, seq);
                output.send(&msg)?;
                seq += 1;
            }
            Ok(())
        }
        "pass" => {
            let (input, output) = (
                input.ok_or(Error::Child("no input".into()))?,
                output.ok_or(Error::Child("no output".into()))?,
            );
            pass_on(input, output)
        }
        "check" => {
            let mut input = input.ok_or(Error::Child("no input".into()))?;
            let (mut n, mut total) = (0u64, 0u64);
            let mut started = None;
            loop {
                match input.recv() {
                    Ok(msg) => {
                        let (word0, sum) = sum(&msg);
                        if word0 != n || msg.len() != size {
                            return Err(Error::Corrupt(format!("message {n}: word 0 is {word0}")));
                        }
                        started.get_or_insert_with(Instant::now);
                        total = total.wrapping_add(sum);
                        n += 1;
                    }
                    Err(sp::Error::PeerGone) => break,
                    Err(err) => return Err(err.into()),
                }
            }
            let elapsed = started.map_or(Duration::ZERO, |t| t.elapsed());
            let path = PathBuf::from(report.ok_or(Error::Child("no report file".into()))?);
            std::fs::write(path, format!("{n} {total} {}", elapsed.as_nanos()))?;
            Ok(())
        }
        other => Err(Error::Child(format!("unknown stage {other}"))),
    }
}
