//! A tokio parent gathers typed values from several children: `tokio::select!` over the
//! children's receivers, a time limit, and a graceful shutdown (on the limit or Ctrl-C).
//!
//! ```text
//! cargo run -p sp --example async_fanin --features tokio -- --children 3 --seconds 2
//! ```
//!
//! Each child (this binary again, `--child`) adopts its end, then sends a `Report` every
//! millisecond until the parent sends `Command::Stop`, when it sends a last report and exits. The
//! parent counts what each child sent, checks that the sequence numbers have no gap and no
//! repeat, stops everyone when the time is up, and waits (bounded) for the children to exit.

use std::process::Command as ProcessCommand;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use serde::{Deserialize, Serialize};
use sp::tokio::{AsyncReceiver, AsyncSender};

#[derive(Parser, Debug)]
struct Args {
    /// How many children (at most three: one `select!` branch each).
    #[arg(long, default_value_t = 3)]
    children: usize,
    /// How long to gather before shutting down.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Internal: run as a child.
    #[arg(long, hide = true)]
    child: Option<u32>,
}

/// What the parent tells a child.
#[derive(Debug, Serialize, Deserialize)]
enum Command {
    Stop,
}

/// What a child reports.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    child: u32,
    seq: u64,
    value: f64,
    last: bool,
}

/// One child as the parent sees it.
struct Peer {
    process: Option<sp::Child>,
    commands: AsyncSender<Command>,
    received: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(id) = args.child {
        return child(id);
    }
    if !(1..=3).contains(&args.children) {
        bail!("--children must be 1, 2 or 3");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(parent(args.children, Duration::from_secs(args.seconds)))
}

fn config() -> sp::Config {
    // A parent that selects over several receivers parks at once instead of spinning through
    // each receiver's budget in turn.
    sp::Config::new().idle(sp::IdleStrategy::park())
}

async fn parent(n_children: usize, limit: Duration) -> anyhow::Result<()> {
    let mut peers = Vec::new();
    // One slot per `select!` branch; a child whose stream ended leaves its slot empty.
    let mut reports: [Option<AsyncReceiver<Report>>; 3] = [None, None, None];
    for id in 0..n_children as u32 {
        let mut cmd = ProcessCommand::new(std::env::current_exe()?);
        cmd.arg("--child").arg(id.to_string());
        // The handshake is blocking (bounded by `Config::handshake_timeout`): done before the
        // gathering starts.
        let (process, commands, receiver) = sp::spawn::<Command, Report>(&mut cmd, &config())?;
        peers.push(Peer {
            process: Some(process),
            commands: AsyncSender::new(commands)?,
            received: 0,
        });
        reports[id as usize] = Some(AsyncReceiver::new(receiver)?);
    }
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut stopping = false;
    println!("gathering from {n_children} children for {limit:?} (Ctrl-C stops early)");
    while reports.iter().any(Option::is_some) {
        // One branch per child; an empty slot never completes. Every `recv` is cancel-safe: the
        // branches that lose take nothing.
        let [r0, r1, r2] = &mut reports;
        let (index, res) = tokio::select! {
            res = recv(r0) => (0, res),
            res = recv(r1) => (1, res),
            res = recv(r2) => (2, res),
            () = &mut deadline, if !stopping => {
                println!("time is up: stopping the children");
                stop_all(&mut peers).await;
                stopping = true;
                continue;
            }
            _ = &mut ctrl_c, if !stopping => {
                println!("Ctrl-C: stopping the children");
                stop_all(&mut peers).await;
                stopping = true;
                continue;
            }
        };
        let peer = &mut peers[index];
        match res {
            Ok(report) => {
                if report.seq != peer.received || report.child != index as u32 {
                    bail!(
                        "child {index}: report {report:?} after {} reports",
                        peer.received
                    );
                }
                peer.received += 1;
                if report.last {
                    reports[index] = None;
                }
            }
            Err(sp::Error::PeerGone) => reports[index] = None,
            Err(err) => return Err(err).context(format!("child {index}")),
        }
    }
    for (index, peer) in peers.iter_mut().enumerate() {
        let Some(mut process) = peer.process.take() else {
            continue;
        };
        // Bounded wait for the exit: a child that does not leave within a second is killed.
        let status = tokio::task::spawn_blocking(move || {
            for _ in 0..100 {
                if let Some(status) = process.try_wait()? {
                    return Ok(status);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            process.kill()?;
            process.wait()
        })
        .await??;
        println!("child {index}: {} reports, exit {status}", peer.received);
    }
    Ok(())
}

/// The next report from `slot`, or never if the slot is empty.
async fn recv(slot: &mut Option<AsyncReceiver<Report>>) -> sp::Result<Report> {
    match slot {
        Some(reports) => reports.recv().await,
        None => std::future::pending().await,
    }
}

async fn stop_all(peers: &mut [Peer]) {
    for peer in peers {
        // A child that is already gone needs no telling.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), peer.commands.send(&Command::Stop)).await;
    }
}

fn child(id: u32) -> anyhow::Result<()> {
    // Adopt before the runtime starts its threads, so that `adopt` can clear `SP_CORE_FD`.
    let (reports, commands) = sp::adopt::<Report, Command>(&config())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut reports = AsyncSender::new(reports)?;
        let mut commands = AsyncReceiver::new(commands)?;
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut seq = 0u64;
        loop {
            tokio::select! {
                cmd = commands.recv() => {
                    // Stop, or the parent is gone: one last report, then leave.
                    let _ = cmd;
                    let last = Report { child: id, seq, value: 0.0, last: true };
                    let _ = reports.send(&last).await;
                    return Ok(());
                }
                _ = tick.tick() => {
                    let value = (seq as f64).sqrt() * f64::from(id + 1);
                    reports.send(&Report { child: id, seq, value, last: false }).await?;
                    seq += 1;
                }
            }
        }
    })
}
