//! A stage of an sp pipeline on another host: the pipeline keeps a local stage, a proxy, that
//! forwards its input to the remote stage and the remote stage's output to its own output.
//!
//! ```text
//!   stage A ──ring──▶ proxy ──zenoh <key>/in──▶ serve_stage(work) ──zenoh <key>/out──▶ proxy ──ring──▶ stage C
//!   (local)          (local, stage B of the pipeline)      (remote host)                 (same proxy)      (local)
//! ```
//!
//! The rest of the pipeline does not change: [`remote_stage`] gives the [`Command`] to put in
//! [`sp::pipeline::Builder::stage`] where the local stage's command was, and the proxy joins the
//! pipeline like any stage (its neighbours' types are checked by sp's HELLO, the remote's by the
//! gateways' tokens). A remote stage that dies or fails makes the proxy fail, so the pipeline
//! names the proxy's stage ([`sp::Error::StageFailed`]) and its neighbours end as they would
//! around a local stage that failed; the proxy says which key on its standard error. A stage
//! upstream that fails reaches the remote stage as an ABORT (the proxy asks the parent with
//! [`Stage::input_ended`](sp::pipeline::Stage::input_ended)), so the remote ends its output the
//! same way.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sp::Value;
use zenoh::Wait;

use crate::error::{Error, Result};
use crate::gateway::{Gateway, Summary};
use crate::options::Options;
use crate::publish::{check_key, publish_with};
use crate::subscribe::subscribe;

/// Names the remote stage's key in a proxy's environment.
pub const STAGE_KEY_ENV: &str = "SP_ZENOH_STAGE_KEY";
/// Carries the proxy's zenoh configuration (JSON) in its environment.
pub const ZENOH_CONFIG_ENV: &str = "SP_ZENOH_CONFIG";

/// What each direction of a stage's forwarding did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageSummary {
    /// The stage's input, sent to (proxy) or received from (remote) `<key>/in`.
    pub input: Summary,
    /// The stage's output, received from (proxy) or sent to (remote) `<key>/out`.
    pub output: Summary,
}

/// The command of a pipeline stage that [`serve_stage`] runs at `key` on another host: this
/// executable again, as a proxy that reaches that host with the zenoh configuration `zenoh`.
/// The executable's `main` must start with [`Proxy::from_env`].
///
/// # Errors
/// [`Error::Zenoh`] for a key a gateway cannot use; [`Error::Local`] if this executable's path
/// is unknown.
///
/// # Examples
/// ```no_run
/// use std::process::Command;
/// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// type Chunk = sp::Plain<[u64; 512]>;
/// // First thing in `main`: a process started as the proxy does only that.
/// if let Some(proxy) = sp_zenoh::Proxy::from_env() {
///     proxy?.run::<Chunk, Chunk>(&sp::Config::new(), &sp_zenoh::Options::new())?;
///     return Ok(());
/// }
/// let zenoh = sp_zenoh::peer_config(&[], &["tcp/10.0.0.2:7447"])?;
/// let mut pipeline = sp::pipeline::Builder::new()
///     .stage(Command::new("decode"))
///     .stage(sp_zenoh::remote_stage("site-b/transform", &zenoh)?) // was Command::new("transform")
///     .stage(Command::new("encode"))
///     .spawn(&sp::Config::new())?;
/// pipeline.wait()?;
/// # Ok(())
/// # }
/// ```
pub fn remote_stage(key: &str, zenoh: &zenoh::Config) -> Result<Command> {
    check_key(key)?;
    let exe = std::env::current_exe().map_err(|err| Error::Local(err.into()))?;
    let mut command = Command::new(exe);
    command
        .env(STAGE_KEY_ENV, key)
        .env(ZENOH_CONFIG_ENV, zenoh.to_string());
    Ok(command)
}

/// A proxy stage, in a process that [`remote_stage`]'s command started.
#[derive(Debug)]
pub struct Proxy {
    key: String,
    zenoh: zenoh::Config,
}

impl Proxy {
    /// `Some` if this process was started as a proxy (its environment names a key), with the
    /// proxy or why its configuration is unusable; `None` otherwise.
    pub fn from_env() -> Option<Result<Self>> {
        let key = std::env::var(STAGE_KEY_ENV).ok()?;
        Some(Self::from_parts(key))
    }

    fn from_parts(key: String) -> Result<Self> {
        check_key(&key)?;
        let text = std::env::var(ZENOH_CONFIG_ENV).unwrap_or_else(|_| "{}".to_owned());
        let zenoh = zenoh::Config::from_json5(&text)?;
        Ok(Self { key, zenoh })
    }

    /// The remote stage's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Joins the pipeline as its stage ([`sp::pipeline::join`]`::<In, Out>`), publishes the
    /// stage's input on `<key>/in` and sends what arrives on `<key>/out` into its output, until
    /// both streams end.
    ///
    /// # Errors
    /// [`Error::Local`] if joining the pipeline fails; any gateway's error (the remote stage
    /// gone or failed: [`Error::RemoteGone`], [`Error::RemoteFailed`]). Return it from `main`, so
    /// that the proxy exits non-zero and the pipeline names its stage.
    pub fn run<In: Value + 'static, Out: Value + 'static>(
        self,
        config: &sp::Config,
        options: &Options,
    ) -> Result<StageSummary> {
        let mut stage = sp::pipeline::join::<In, Out>(config)?;
        let (input, output) = (stage.take_input(), stage.take_output());
        let stage = Arc::new(Mutex::new(stage));
        let session = zenoh::open(self.zenoh).wait()?;
        let key = &self.key;
        let outbound = match input {
            Some(rx) => {
                let stage = Arc::clone(&stage);
                // The input's end is clean only if the stage before ended well.
                let clean_end = move || {
                    let mut stage = stage.lock().unwrap_or_else(|p| p.into_inner());
                    stage.input_ended().is_ok()
                };
                Some(publish_with(
                    &session,
                    &format!("{key}/in"),
                    rx,
                    options,
                    clean_end,
                )?)
            }
            None => None,
        };
        let inbound = match output {
            Some(tx) => Some(subscribe(&session, &format!("{key}/out"), tx, options)?),
            None => None,
        };
        let input = outbound.map(Gateway::join).transpose();
        let output = inbound.map(Gateway::join).transpose();
        drop(session);
        Ok(StageSummary {
            input: input?.unwrap_or_default(),
            output: output?.unwrap_or_default(),
        })
    }
}

/// Runs a pipeline stage for a [`Proxy`] elsewhere: the values published on `<key>/in` reach
/// `work` through a local receiver, and what it sends goes out on `<key>/out`. `work` reads
/// until its receiver reports [`sp::Error::PeerGone`] (the end of the input) and returns; the
/// output then ends cleanly if both the input and `work` did, and with an ABORT otherwise.
///
/// # Errors
/// [`Error::Local`] for `work`'s own error or a local channel that cannot be made; a gateway's
/// error (the proxy gone, the input aborted: [`Error::RemoteFailed`]).
///
/// # Examples
/// ```no_run
/// # use zenoh::Wait;
/// let session = zenoh::open(sp_zenoh::peer_config(&["tcp/0.0.0.0:7447"], &[])?).wait()?;
/// sp_zenoh::serve_stage::<u64, u64>(
///     &session,
///     "site-b/transform",
///     &sp::Config::new(),
///     &sp_zenoh::Options::new(),
///     |input, output| loop {
///         match input.recv() {
///             Ok(n) => output.send(&(2 * n))?,
///             Err(sp::Error::PeerGone) => return Ok(()),
///             Err(err) => return Err(err),
///         }
///     },
/// )?;
/// # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// ```
pub fn serve_stage<In: Value + 'static, Out: Value + 'static>(
    session: &zenoh::Session,
    key: &str,
    config: &sp::Config,
    options: &Options,
    work: impl FnOnce(&mut sp::Receiver<In>, &mut sp::Sender<Out>) -> sp::Result<()>,
) -> Result<StageSummary> {
    let (in_tx, mut in_rx) = sp::channel::<In>(config)?;
    let (mut out_tx, out_rx) = sp::channel::<Out>(config)?;
    let inbound = subscribe(session, &format!("{key}/in"), in_tx, options)?;
    let clean = Arc::new(AtomicBool::new(false));
    let clean_end = {
        let clean = Arc::clone(&clean);
        move || clean.load(Ordering::Acquire)
    };
    let outbound = publish_with(session, &format!("{key}/out"), out_rx, options, clean_end)?;
    let worked = work(&mut in_rx, &mut out_tx);
    // A `work` that stopped early leaves input unread: the inbound gateway ends on it.
    drop(in_rx);
    let input = inbound.join();
    // Pairs with the Acquire in `clean_end`, which runs after `out_tx` is dropped below.
    clean.store(worked.is_ok() && input.is_ok(), Ordering::Release);
    drop(out_tx);
    let output = outbound.join();
    worked?;
    Ok(StageSummary {
        input: input?,
        output: output?,
    })
}
