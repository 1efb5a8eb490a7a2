//! `sp-start` and `spawn-pipe`: from starting a child to the first value received from it, 100
//! times each. sp: `sp::spawn` (socketpair, `posix_spawn` and the end handed over after exec, the
//! ring handshake, the HELLO), then `recv` of one `u64` the child sends after `sp::adopt`. The
//! yardstick: `Command::spawn` with a piped stdout, then reading the one line the child writes.
//! The child is this executable in both.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::SCENARIO_ARG;
use crate::error::{Error, Result};
use crate::spec::{RunSpec, Sample};

/// Starts measured per sample.
const STARTS: usize = 100;

pub(super) fn measure(spec: &RunSpec, exe: &Path, sp: bool) -> Result<Sample> {
    let mut ns = Vec::with_capacity(STARTS);
    let config = sp::Config::new();
    let started = Instant::now();
    for _ in 0..STARTS {
        let mut cmd = Command::new(exe);
        cmd.stdin(Stdio::null());
        let t0 = Instant::now();
        if sp {
            cmd.args([SCENARIO_ARG, "start-sp"]).stdout(Stdio::null());
            let (mut child, _tx, mut rx) = sp::spawn::<(), u64>(&mut cmd, &config)?;
            let value = rx.recv()?;
            ns.push(t0.elapsed().as_nanos() as f64);
            let status = child.wait()?;
            if value != 42 || !status.success() {
                return Err(Error::Child(format!("sent {value}, exited {status}")));
            }
        } else {
            cmd.args([SCENARIO_ARG, "start-pipe"])
                .stdout(Stdio::piped());
            let mut child = cmd.spawn()?;
            let stdout = child
                .stdout
                .take()
                .ok_or(Error::Child("no stdout".into()))?;
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            ns.push(t0.elapsed().as_nanos() as f64);
            let status = child.wait()?;
            if line.trim() != "42" || !status.success() {
                return Err(Error::Child(format!("wrote {line:?}, exited {status}")));
            }
        }
    }
    let elapsed = started.elapsed();
    ns.sort_by(f64::total_cmp);
    let mut sample = super::sample(spec, STARTS as u64, elapsed.max(Duration::from_nanos(1)));
    sample.startup_ns = Some(ns[ns.len() / 2]);
    Ok(sample)
}

pub(super) fn child_sp() -> Result<()> {
    let (mut tx, _rx) = sp::adopt::<u64, ()>(&sp::Config::new())?;
    tx.send(&42)?;
    Ok(())
}

pub(super) fn child_pipe() -> Result<()> {
    writeln!(std::io::stdout(), "42")?;
    Ok(())
}
