//! A three-stage sp pipeline, generate → transform → verify, run twice: all local, then with
//! the middle stage in another process reached only over zenoh TCP on localhost (standing in for
//! another host). Every byte is verified by the last stage; the throughput of both is printed.
//!
//! ```text
//! cargo run --release -p sp-zenoh --example remote_stage [-- BYTES]    (default 1G)
//! ```
//!
//! The remote run's pipeline is the local one with one line changed: the transform stage's
//! command becomes `sp_zenoh::remote_stage(key, &zenoh)`, a proxy stage of this executable that
//! forwards to the process serving the key (`sp_zenoh::serve_stage`).

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use zenoh::Wait;

/// 64 KiB: word `i` of block `seq` is `seq * WORDS + i` (plus one after the transform).
type Block = sp::Plain<[u64; WORDS]>;
const WORDS: usize = 8192;
const BLOCK: u64 = (WORDS * 8) as u64;
const ROLE_ENV: &str = "REMOTE_STAGE_ROLE";
const KEY: &str = "example/transform";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let res = if let Some(proxy) = sp_zenoh::Proxy::from_env() {
        proxy
            .and_then(|proxy| proxy.run::<Block, Block>(&sp::Config::new(), &options()))
            .map(|_| ())
            .map_err(BoxError::from)
    } else {
        match std::env::var(ROLE_ENV).as_deref() {
            Ok("generate") => generate(),
            Ok("transform") => transform(),
            Ok("verify") => verify(),
            Ok("remote") => serve(),
            _ => parent(),
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("remote_stage: {err}");
            ExitCode::FAILURE
        }
    }
}

fn options() -> sp_zenoh::Options {
    sp_zenoh::Options::new().connect_timeout(Duration::from_secs(20))
}

fn parent() -> Result<(), BoxError> {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "1G".to_owned());
    let n_blocks = parse_size(&arg)?.div_ceil(BLOCK);
    let bytes = n_blocks * BLOCK;
    println!(
        "{} MB through generate -> transform -> verify, in 64 KiB values",
        bytes / 1_000_000
    );
    let local = run(n_blocks, role("transform", n_blocks))?;
    println!(
        "all local:               {:7.1} MB/s  ({local:.2?}, every byte verified)",
        bytes as f64 / local.as_secs_f64() / 1e6
    );
    // The remote stage: another process, reached only over zenoh TCP on localhost.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let mut server = role("remote", n_blocks)
        .env("REMOTE_STAGE_LISTEN", &endpoint)
        .spawn()?;
    let zenoh = sp_zenoh::peer_config(&[], &[&endpoint])?;
    let remote = run(n_blocks, sp_zenoh::remote_stage(KEY, &zenoh)?);
    let served = server.wait()?;
    let remote = remote?;
    if !served.success() {
        return Err(format!("the remote stage failed: {served}").into());
    }
    println!(
        "middle stage over zenoh: {:7.1} MB/s  ({remote:.2?}, every byte verified; {:.2}x the local run's time)",
        bytes as f64 / remote.as_secs_f64() / 1e6,
        remote.as_secs_f64() / local.as_secs_f64()
    );
    Ok(())
}

/// Runs generate → `middle` → verify and times it from spawn to the last stage's exit.
fn run(n_blocks: u64, middle: Command) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let mut pipeline = sp::pipeline::Builder::new()
        .stage(role("generate", n_blocks))
        .stage(middle)
        .stage(role("verify", n_blocks))
        .spawn(&sp::Config::new())?;
    pipeline.wait()?;
    Ok(started.elapsed())
}

fn role(name: &str, n_blocks: u64) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("current_exe"));
    command
        .env(ROLE_ENV, name)
        .env("REMOTE_STAGE_BLOCKS", n_blocks.to_string());
    command
}

fn n_blocks() -> Result<u64, BoxError> {
    Ok(std::env::var("REMOTE_STAGE_BLOCKS")?.parse()?)
}

fn generate() -> Result<(), BoxError> {
    let mut stage = sp::pipeline::join::<(), Block>(&sp::Config::new())?;
    let mut output = stage.take_output().ok_or("the first stage has no output")?;
    for seq in 0..n_blocks()? {
        let base = seq * WORDS as u64;
        let sent = output.send_with(|block| {
            for (i, word) in block.0.iter_mut().enumerate() {
                *word = base + i as u64;
            }
        });
        sent.map_err(|err| stage.failure(err))?;
    }
    Ok(())
}

/// The local middle stage: every word plus one.
fn transform() -> Result<(), BoxError> {
    let mut stage = sp::pipeline::join::<Block, Block>(&sp::Config::new())?;
    let mut input = stage.take_input().ok_or("no input")?;
    let mut output = stage.take_output().ok_or("no output")?;
    pass_on(&mut input, &mut output).map_err(|err| stage.failure(err))?;
    Ok(stage.input_ended()?)
}

/// Reads blocks until the end of the input, sending each with every word plus one.
fn pass_on(input: &mut sp::Receiver<Block>, output: &mut sp::Sender<Block>) -> sp::Result<()> {
    loop {
        let res = input.recv_in_place(|block, _| {
            output.send_with(|out| {
                for (o, w) in out.0.iter_mut().zip(&block.0) {
                    *o = w.wrapping_add(1);
                }
            })
        });
        match res {
            Ok(sent) => sent?,
            Err(sp::Error::PeerGone) => return Ok(()),
            Err(err) => return Err(err),
        }
    }
}

/// The remote host's side: serves the middle stage on the key.
fn serve() -> Result<(), BoxError> {
    let listen = std::env::var("REMOTE_STAGE_LISTEN")?;
    let session = zenoh::open(sp_zenoh::peer_config(&[&listen], &[])?).wait()?;
    sp_zenoh::serve_stage::<Block, Block>(&session, KEY, &sp::Config::new(), &options(), pass_on)?;
    Ok(())
}

fn verify() -> Result<(), BoxError> {
    let mut stage = sp::pipeline::join::<Block, ()>(&sp::Config::new())?;
    let mut input = stage.take_input().ok_or("the last stage has no input")?;
    let n = n_blocks()?;
    for seq in 0..n {
        let base = seq * WORDS as u64 + 1;
        let first_bad = input
            .recv_in_place(|block, _| {
                block
                    .0
                    .iter()
                    .enumerate()
                    .position(|(i, &w)| w != base + i as u64)
            })
            .map_err(|err| stage.failure(err))?;
        if let Some(i) = first_bad {
            return Err(format!("block {seq}: word {i} is wrong").into());
        }
    }
    match input.recv_in_place(|_, _| ()) {
        Err(sp::Error::PeerGone) => {}
        Ok(()) => return Err("more blocks than were generated".into()),
        Err(err) => return Err(stage.failure(err).into()),
    }
    stage.input_ended()?;
    eprintln!("verify: {n} blocks, every byte as expected");
    Ok(())
}

/// `1G`, `256M`, `64k` or a plain number of bytes (decimal units, as the issue counts).
fn parse_size(text: &str) -> Result<u64, BoxError> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        other => return Err(format!("unknown unit {other:?}").into()),
    };
    Ok(digits.trim().parse::<u64>()? * scale)
}
