//! The child processes' roles: a sink (a subscribing gateway into a local receiver that checks
//! every value), a source (a local sender published by a gateway), and a remote stage (a key in,
//! a transformation, a key out). Each reports `name=value` pairs on stdout.

use std::collections::BTreeMap;
use std::time::Duration;

use sp_zenoh::{Error, OnLoss, Options};
use zenoh::Wait;

use crate::items::{Checker, Item, Sizes, item, transform};

/// A role's parameters.
pub(crate) struct Args(BTreeMap<String, String>);

impl Args {
    pub(crate) fn parse(text: &str) -> Self {
        Self(
            text.split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn text(&self, name: &str) -> Result<&str, String> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("argument {name} missing"))
    }

    fn num(&self, name: &str) -> Result<u64, String> {
        match self.0.get(name) {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| format!("argument {name}={v}")),
        }
    }

    fn ports(&self, name: &str) -> Vec<u16> {
        self.0
            .get(name)
            .map(|v| v.split(',').filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }

    fn sizes(&self) -> Sizes {
        Sizes::from_name(self.0.get("sizes").map_or("mixed", String::as_str))
    }

    fn session(&self) -> zenoh::Session {
        let listen = self.ports("listen").first().copied();
        let lease = self.num("lease").ok().filter(|&l| l > 0);
        crate::open_session(listen, &self.ports("connect"), lease)
    }

    fn options(&self) -> Result<Options, String> {
        let mut options = Options::new().connect_timeout(Duration::from_secs(20));
        let resume_ms = self.num("resume_ms")?;
        if resume_ms > 0 {
            options = options.on_loss(OnLoss::Resume {
                within: Duration::from_millis(resume_ms),
            });
        }
        Ok(options)
    }
}

pub(crate) fn run(role: &str, args: &Args) -> Result<(), String> {
    match role {
        "sink" => sink(args),
        "slow-sink" => slow_sink(args),
        "serve" => serve(args),
        "gen" => gen_stage(args),
        "check" => check_stage(args),
        "source" => source(args),
        "stage" => stage(args),
        other => Err(format!("unknown role {other}")),
    }
}

/// Ends this process the way a crash does: no destructor runs, no token is undeclared.
fn die() -> ! {
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    unreachable!("SIGKILL returned");
}

/// Waits for the parent to kill this process: returns (an error) only if the parent closed
/// its end of stdin instead, that is, ended first.
fn hold() -> Result<(), String> {
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest);
    Err("stdin closed while holding: the parent ended first".into())
}

/// With `ready=1`, the liveliness token `<key>/ready`, declared on the session of the gateway
/// just started: the parent sees it after that gateway's own token (one session's declarations
/// reach a peer in order), so it knows the gateway's token has reached its own gateways.
pub(crate) fn ready_token(
    session: &zenoh::Session,
    key: &str,
    args: &Args,
) -> Result<Option<zenoh::liveliness::LivelinessToken>, String> {
    if args.num("ready")? != 1 {
        return Ok(None);
    }
    session
        .liveliness()
        .declare_token(format!("{key}/ready"))
        .wait()
        .map(Some)
        .map_err(|e| e.to_string())
}

fn config() -> sp::Config {
    sp::Config::new()
}

/// Receives on `key` into a local receiver and checks every value. `expect=end` requires the
/// stream's clean end with `n` values (or `n - first` after a resume), `expect=gone` the remote's
/// loss, `expect=failed` its failure; `die_after=K` dies after K values; `hold_after=K` says
/// `held` after K values and waits to be killed; `ready=1` declares the token `<key>/ready` once
/// its gateway's token is declared; `slow_us` sleeps that long per value.
fn sink(args: &Args) -> Result<(), String> {
    let session = args.session();
    let (tx, mut rx) = sp::channel::<Item>(&config()).map_err(|e| e.to_string())?;
    let key = args.text("key")?;
    let gateway =
        sp_zenoh::subscribe(&session, key, tx, &args.options()?).map_err(|e| e.to_string())?;
    let _ready = ready_token(&session, key, args)?;
    let mut checker = Checker::new(args.sizes(), args.num("transformed")? == 1);
    let (die_after, slow) = (args.num("die_after")?, args.num("slow_us")?);
    let hold_after = args.num("hold_after")?;
    loop {
        match rx.recv() {
            Ok(value) => checker.check(&value)?,
            Err(sp::Error::PeerGone) => break,
            Err(err) => return Err(format!("local receiver: {err}")),
        }
        if checker.n_values == die_after {
            die();
        }
        if checker.n_values == hold_after {
            println!("held");
            hold()?;
        }
        if slow > 0 {
            std::thread::sleep(Duration::from_micros(slow));
        }
    }
    let first = checker.first_seq.unwrap_or(0);
    let res = gateway.join();
    match (args.text("expect")?, res) {
        ("end", Ok(summary)) => {
            let n = args.num("n")?;
            if summary.records != checker.n_values || checker.n_values + first != n {
                return Err(format!(
                    "{} values from {first} (gateway: {summary:?}), {n} sent",
                    checker.n_values
                ));
            }
        }
        ("gone", Err(Error::RemoteGone { .. })) => {}
        ("failed", Err(Error::RemoteFailed { .. })) => {}
        (expect, res) => return Err(format!("expected {expect}, got {res:?}")),
    }
    println!("records={} first={first}", checker.n_values);
    Ok(())
}

/// Publishes `n` values of stream `stream` on `key`; `die_after=K` dies after sending K;
/// `hold_after=K` waits to be killed after sending K; `ready=1` as for [`sink`].
fn source(args: &Args) -> Result<(), String> {
    let session = args.session();
    let (mut tx, rx) = sp::channel::<Item>(&config()).map_err(|e| e.to_string())?;
    let key = args.text("key")?;
    let gateway =
        sp_zenoh::publish(&session, key, rx, &args.options()?).map_err(|e| e.to_string())?;
    let _ready = ready_token(&session, key, args)?;
    let (n, die_after) = (args.num("n")?, args.num("die_after")?);
    let hold_after = args.num("hold_after")?;
    let (stream, sizes) = (args.num("stream")? as u32, args.sizes());
    for seq in 0..n {
        tx.send(&item(stream, seq, sizes))
            .map_err(|e| format!("send {seq}: {e}"))?;
        if seq + 1 == die_after {
            // Mid-stream: some of these values are still in the ring or in zenoh's queue.
            die();
        }
        if seq + 1 == hold_after {
            hold()?;
        }
    }
    drop(tx);
    let summary = gateway.join().map_err(|e| format!("gateway: {e}"))?;
    println!("records={}", summary.records);
    Ok(())
}

/// The remote stage: values from `key_in`, transformed, to `key_out`.
fn stage(args: &Args) -> Result<(), String> {
    let session = args.session();
    let options = args.options()?;
    let (in_tx, mut in_rx) = sp::channel::<Item>(&config()).map_err(|e| e.to_string())?;
    let (mut out_tx, out_rx) = sp::channel::<Item>(&config()).map_err(|e| e.to_string())?;
    let inbound = sp_zenoh::subscribe(&session, args.text("key_in")?, in_tx, &options)
        .map_err(|e| e.to_string())?;
    let outbound = sp_zenoh::publish(&session, args.text("key_out")?, out_rx, &options)
        .map_err(|e| e.to_string())?;
    let mut n = 0u64;
    loop {
        match in_rx.recv() {
            Ok(value) => out_tx
                .send(&transform(&value))
                .map_err(|e| format!("stage send: {e}"))?,
            Err(sp::Error::PeerGone) => break,
            Err(err) => return Err(format!("stage receive: {err}")),
        }
        n += 1;
    }
    drop(out_tx);
    inbound.join().map_err(|e| format!("inbound: {e}"))?;
    outbound.join().map_err(|e| format!("outbound: {e}"))?;
    println!("records={n}");
    Ok(())
}

/// A 64 KiB plain value: word `i` of value `seq` is `seq * 8192 + i`.
pub(crate) type Block = sp::Plain<[u64; 8192]>;

pub(crate) fn block(seq: u64) -> Block {
    sp::Plain(std::array::from_fn(|i| seq * 8192 + i as u64))
}

/// Receives `n` [`Block`]s on `key`, taking `slow_us` per value, and checks each.
fn slow_sink(args: &Args) -> Result<(), String> {
    let session = args.session();
    let (tx, mut rx) = sp::channel::<Block>(&config()).map_err(|e| e.to_string())?;
    let gateway = sp_zenoh::subscribe(&session, args.text("key")?, tx, &args.options()?)
        .map_err(|e| e.to_string())?;
    let (n, slow) = (args.num("n")?, Duration::from_micros(args.num("slow_us")?));
    for seq in 0..n {
        let value = rx.recv().map_err(|e| format!("value {seq}: {e}"))?;
        if value.0[0] != seq * 8192 || value != block(seq) {
            return Err(format!("value {seq} differs (starts {})", value.0[0]));
        }
        std::thread::sleep(slow);
    }
    if !matches!(rx.recv(), Err(sp::Error::PeerGone)) {
        return Err("more values than sent".into());
    }
    let summary = gateway.join().map_err(|e| e.to_string())?;
    println!("records={}", summary.records);
    Ok(())
}

/// A remote stage: serves `key` (`serve_stage`) with the transformation; `die_after=K` dies
/// after K values.
fn serve(args: &Args) -> Result<(), String> {
    let session = args.session();
    let die_after = args.num("die_after")?;
    let mut n = 0;
    let summary = sp_zenoh::serve_stage::<Item, Item>(
        &session,
        args.text("key")?,
        &config(),
        &args.options()?,
        |input, output| loop {
            match input.recv() {
                Ok(value) => output.send(&transform(&value))?,
                Err(sp::Error::PeerGone) => return Ok(()),
                Err(err) => return Err(err),
            }
            n += 1;
            if n == die_after {
                die();
            }
        },
    )
    .map_err(|e| format!("serve: {e}"))?;
    println!("records={}", summary.input.records);
    Ok(())
}

/// A pipeline's first stage: `n` values.
fn gen_stage(args: &Args) -> Result<(), String> {
    let mut stage = sp::pipeline::join::<(), Item>(&config()).map_err(|e| e.to_string())?;
    let mut output = stage.take_output().ok_or("no output")?;
    for seq in 0..args.num("n")? {
        if let Err(err) = output.send(&item(9, seq, Sizes::Mixed)) {
            return Err(format!("gen: {}", stage.failure(err)));
        }
    }
    Ok(())
}

/// A pipeline's last stage: checks `n` transformed values.
fn check_stage(args: &Args) -> Result<(), String> {
    let mut stage = sp::pipeline::join::<Item, ()>(&config()).map_err(|e| e.to_string())?;
    let mut input = stage.take_input().ok_or("no input")?;
    let mut checker = Checker::new(Sizes::Mixed, true);
    checker.drain(&mut input, "check")?;
    stage.input_ended().map_err(|e| format!("check: {e}"))?;
    let n = args.num("n")?;
    if checker.n_values != n {
        return Err(format!("check: {} values of {n}", checker.n_values));
    }
    Ok(())
}
