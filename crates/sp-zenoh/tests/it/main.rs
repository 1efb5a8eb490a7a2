//! Tests of sp-zenoh across real processes over zenoh TCP on localhost: this binary re-executes
//! itself as the remote side.
//!
//! Started in a role (sp-test-support's `SP_TEST_ROLE`, its parameter `name=value` pairs),
//! `main` plays it (a sink, a source, a remote stage) and exits with its status; otherwise it runs
//! the trials through sp-test-support's runner, one at a time, each under the watchdog that ends
//! the run after its time limit and with the descriptor-leak guard. Every zenoh session uses explicit `tcp/127.0.0.1:PORT` endpoints (ports picked free
//! at run time) with multicast scouting off. Nothing sleeps to synchronise; the slow remote
//! sleeps to be slow, and the end of a trial polls for zenoh to release the sockets of peers that
//! went away ([`settle_fds`]). A child gives up after [`CHILD_LIMIT`], so none outlives a failed run.

mod faults;
mod handover;
mod items;
mod pipeline;
mod refusals;
mod roles;
mod streams;

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use sp_test_support::role::Role;
use zenoh::Wait;

const TRIAL_LIMIT: Duration = Duration::from_secs(90);
const CHILD_LIMIT: Duration = Duration::from_secs(120);

use sp_test_support::TestResult;

fn main() -> ExitCode {
    // `RUST_LOG=zenoh=debug` shows what zenoh does, in the trials and the children.
    zenoh::try_init_log_from_env();
    // Started by `sp_zenoh::remote_stage` as a pipeline's proxy stage.
    if let Some(proxy) = sp_zenoh::Proxy::from_env() {
        let options = sp_zenoh::Options::new().connect_timeout(Duration::from_secs(20));
        let res = proxy
            .and_then(|proxy| proxy.run::<items::Item, items::Item>(&sp::Config::new(), &options));
        if let Err(err) = &res {
            eprintln!("proxy: {err}");
        }
        std::process::exit(i32::from(res.is_err()));
    }
    sp_test_support::main(run_role, || {
        // zenoh's runtime threads and their descriptors live as long as the process: start them
        // before the first trial's descriptor reading.
        warm_up();
        let mut trials = Vec::new();
        trials.extend(streams::trials());
        trials.extend(faults::trials());
        trials.extend(handover::trials());
        trials.extend(refusals::trials());
        trials.extend(pipeline::trials());
        trials
    })
}

/// A child: plays `role` (its parameter holds `name=value` pairs), giving up after
/// [`CHILD_LIMIT`].
fn run_role(role: &Role) -> ExitCode {
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_LIMIT);
        eprintln!("child: ran longer than {CHILD_LIMIT:?}; exiting");
        std::process::exit(4);
    });
    role.exit(roles::run(&role.name, &roles::Args::parse(&role.arg)))
}

/// Two sessions, connected, pass one sample: every runtime zenoh starts lazily is running. Then
/// waits (at most [`SETTLE_LIMIT`]) until zenoh has released the sessions' sockets, which it
/// does on its runtime threads after `close` returned ([`settle_fds`]); the first trial's
/// descriptor reading would otherwise hold one that closes during that trial.
fn warm_up() {
    let sockets_before = sockets();
    let port = free_port();
    let a = open_session(Some(port), &[], None);
    let b = open_session(None, &[port], None);
    let subscriber = b
        .declare_subscriber("it/warm-up")
        .wait()
        .expect("subscriber");
    let publisher = a.declare_publisher("it/warm-up").wait().expect("publisher");
    while !publisher
        .matching_status()
        .wait()
        .expect("matching")
        .matching()
    {
        std::thread::yield_now();
    }
    publisher.put("hello").wait().expect("put");
    subscriber
        .recv_timeout(Duration::from_secs(10))
        .expect("warm-up sample")
        .expect("warm-up sample in time");
    drop((subscriber, publisher));
    a.close().wait().expect("close");
    b.close().wait().expect("close");
    let deadline = Instant::now() + SETTLE_LIMIT;
    while sockets() != sockets_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// This process's sockets, from its descriptor table.
fn sockets() -> Vec<String> {
    sp_test_support::fds::open_fds()
        .into_values()
        .filter(|target| target.starts_with("socket:"))
        .collect()
}

/// A trial run under the watchdog (with [`TRIAL_LIMIT`]) and the descriptor-leak guard; prints
/// how long it took.
fn trial(name: &str, f: impl FnOnce() -> TestResult + Send + 'static) -> Trial {
    let name_owned = name.to_owned();
    sp_test_support::trial_with_limit(name, TRIAL_LIMIT, move || {
        let before = sp_test_support::fds::open_fds();
        let started = Instant::now();
        let res = f();
        eprintln!("{name_owned}: {:.2?}", started.elapsed());
        if res.is_ok() {
            settle_fds(&before);
        }
        res
    })
}

/// How long [`settle_fds`] waits at most.
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// Waits (at most [`SETTLE_LIMIT`]) for the descriptor table to be `before` again, so that the
/// leak guard that follows compares a settled table.
///
/// zenoh closes the connection of a peer that went away (killed, exited, silent past the lease)
/// on its own runtime threads, after it has reported the peer's tokens gone and even after
/// `Session::close` returned: for a moment the table still holds that socket (closed, so in no
/// `/proc/net` table, its descriptor not yet released). zenoh offers nothing to wait on for that,
/// so this looks again every few milliseconds; a descriptor still open at the limit is a leak,
/// and the guard reports it.
fn settle_fds(before: &sp_test_support::fds::FdTable) {
    let deadline = Instant::now() + SETTLE_LIMIT;
    while sp_test_support::fds::open_fds() != *before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound with port 0, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local_addr").port()
}

fn endpoint(port: u16) -> String {
    format!("tcp/127.0.0.1:{port}")
}

/// A zenoh session that listens on `listen` and connects to each of `connect`.
fn open_session(listen: Option<u16>, connect: &[u16], lease_ms: Option<u64>) -> zenoh::Session {
    let listen: Vec<String> = listen.into_iter().map(endpoint).collect();
    let connect: Vec<String> = connect.iter().copied().map(endpoint).collect();
    let listen: Vec<&str> = listen.iter().map(String::as_str).collect();
    let connect: Vec<&str> = connect.iter().map(String::as_str).collect();
    let mut config = sp_zenoh::peer_config(&listen, &connect).expect("config");
    if let Some(lease) = lease_ms {
        // A silent peer is gone after the lease; a `put` blocked on it gives up (and closes the
        // link) after `wait_before_close`, which would otherwise hold the close for 5 s.
        config
            .insert_json5("transport/link/tx/lease", &lease.to_string())
            .expect("lease");
        config
            .insert_json5(
                "transport/link/tx/queue/congestion_control/block/wait_before_close",
                &(lease * 1000).to_string(),
            )
            .expect("wait_before_close");
    }
    zenoh::open(config).wait().expect("zenoh session")
}

/// A child process, killed and reaped when dropped (on every early return of a trial).
#[derive(Debug)]
struct Kid(Option<Child>);

impl Kid {
    fn pid(&self) -> rustix::process::Pid {
        let child = self.0.as_ref().expect("the child is there until reaped");
        rustix::process::Pid::from_child(child)
    }

    /// Kills the child (SIGKILL) and reaps it.
    fn kill(&mut self) -> Result<std::process::ExitStatus, String> {
        let child = self.0.as_mut().expect("the child is there until reaped");
        child.kill().map_err(|e| e.to_string())?;
        child.wait().map_err(|e| e.to_string())
    }

    /// Reads one line the child printed (it must not have taken its report's pipe yet).
    fn read_line(&mut self) -> Result<String, String> {
        use std::io::Read;
        let child = self.0.as_mut().expect("the child is there until reaped");
        let stdout = child
            .stdout
            .as_mut()
            .ok_or("the child's stdout is not a pipe")?;
        // Byte by byte, so that nothing after the line is taken from the pipe.
        let mut line = Vec::new();
        let mut byte = [0; 1];
        loop {
            match stdout.read(&mut byte) {
                Ok(0) => return Err(format!("the child ended after {line:?}")),
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0]),
                Err(err) => return Err(err.to_string()),
            }
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// Waits for the child to exit.
    fn wait(&mut self) -> Result<std::process::ExitStatus, String> {
        let child = self.0.as_mut().expect("the child is there until reaped");
        child.wait().map_err(|e| e.to_string())
    }

    /// Waits for the child to exit and takes what it printed.
    fn output(mut self) -> Result<std::process::Output, String> {
        let child = self.0.take().expect("the child is there until reaped");
        child.wait_with_output().map_err(|e| e.to_string())
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// This binary as the child `role` with `args` (`name=value` pairs).
fn child_command(role: &str, args: &str) -> Command {
    sp_test_support::role::command(role, args)
}

/// Starts this binary as the child `role` with `args`; its stdout is a pipe for its report.
fn spawn_child(role: &str, args: &str) -> Kid {
    let child = child_command(role, args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    Kid(Some(child))
}

/// As [`spawn_child`], with stdin a pipe that stays open: a child that holds (`hold_after`)
/// waits on it until it is killed.
fn spawn_holding(role: &str, args: &str) -> Kid {
    let child = child_command(role, args)
        .stdout(Stdio::piped())
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn child");
    Kid(Some(child))
}

/// Waits for a child (bounded by its own [`CHILD_LIMIT`]) and requires a clean exit; its report.
fn reap(child: Kid) -> Result<String, String> {
    let out = child.output()?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!("child failed: {} (report {report:?})", out.status));
    }
    Ok(report)
}

/// How many values the long trials send: fewer in a debug build.
fn count(release: u64) -> u64 {
    if cfg!(debug_assertions) {
        release / 5
    } else {
        release
    }
}

/// A named value from a report line `name=value ...`.
fn report_value(report: &str, name: &str) -> Result<u64, String> {
    report
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
        .ok_or_else(|| format!("no {name} in report {report:?}"))?
        .parse()
        .map_err(|_| format!("bad {name} in report {report:?}"))
}

/// Requires `res` to be an error whose text says `what`.
fn expect_err<T: std::fmt::Debug>(
    res: Result<T, sp_zenoh::Error>,
    matches: impl FnOnce(&sp_zenoh::Error) -> bool,
) -> TestResult {
    match res {
        Err(err) if matches(&err) => {
            eprintln!("  as expected: {err}");
            Ok(())
        }
        other => Err(format!("unexpected outcome: {other:?}")),
    }
}
