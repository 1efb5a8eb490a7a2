//! A gateway between sp's typed channels and zenoh: a stage of a pipeline on another host.
//!
//! sp connects processes on one machine; [zenoh](https://zenoh.io) connects machines (peer to
//! peer or through routers, over TCP, UDP or QUIC, with reliable delivery and congestion
//! control). This crate carries an sp stream over zenoh without changing either end:
//!
//! - [`publish`] forwards everything a local [`sp::Receiver<T>`] receives to a zenoh key;
//! - [`subscribe`] sends everything published on a key into a local [`sp::Sender<T>`].
//!
//! The producer and the consumer keep their plain sp channels and never see zenoh. A gateway
//! pair connects one publisher to one subscriber, like the ring it extends:
//!
//! - **The bytes are sp's**: each record travels as the ring held it (the value's postcard or
//!   plain-data encoding), never decoded or encoded again; the final receiver checks it as it
//!   checks any peer's bytes. A value that went as a blob locally is sent as its bytes and
//!   becomes a blob again on the far side if it is large there too.
//! - **Descriptors cannot cross**: a value sent with descriptors ends the gateway with
//!   [`Error::CannotCross`] before anything of it is sent.
//! - **Nothing is lost or duplicated unseen**: every record has a sequence number, every sample
//!   names its publisher's stream, and the subscriber checks both ([`Violation::Sequence`]).
//!   Delivery is zenoh's reliable delivery with `CongestionControl::Block`: a slow remote slows
//!   the local producer, through full rings and a blocked `put`, instead of losing data or
//!   growing a queue.
//! - **A lost remote is an error, not a stall**: each gateway holds a zenoh liveliness token and
//!   watches the other's; a remote that dies, closes, or stops answering within zenoh's lease
//!   ends the gateway with [`Error::RemoteGone`], or, with [`OnLoss::Resume`], the gateway
//!   waits a bounded time for a restarted remote and goes on. A restarted remote that shows up
//!   before zenoh reports the old one gone is waited out too, for at most
//!   [`Options::handover`]: the gateway holds its stream until one of the two goes.
//! - **A pipeline stage can move to another host**: [`remote_stage`] gives the command of a
//!   local proxy stage for an [`sp::pipeline::Builder`], and [`serve_stage`] runs the stage's
//!   work on the other host; the rest of the pipeline does not change.
//! - **Configuration is zenoh's own** ([`zenoh::Config`]): [`peer_config`] makes the common one
//!   (explicit endpoints, no multicast scouting).
//!
//! The samples and tokens are specified in `docs/protocol.md`, "sp-zenoh samples".
//!
//! ```no_run
//! use zenoh::Wait;
//!
//! // On host A: a local producer's values go to the key `pipeline/resized`.
//! let session = zenoh::open(sp_zenoh::peer_config(&["tcp/0.0.0.0:7447"], &[])?).wait()?;
//! let (mut tx, rx) = sp::channel::<Vec<u32>>(&sp::Config::new())?;
//! let gateway = sp_zenoh::publish(&session, "pipeline/resized", rx, &sp_zenoh::Options::new())?;
//! tx.send(&vec![1, 2, 3])?;
//! drop(tx);
//! gateway.join()?;
//!
//! // On host B: `sp_zenoh::subscribe(&session, "pipeline/resized", tx, &options)` and read the
//! // values from its sp receiver.
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

mod error;
mod gateway;
mod options;
mod publish;
mod stage;
mod subscribe;
mod watch;
mod wire;

pub use error::{Error, Refusal, Result, Violation};
pub use gateway::{Gateway, Summary};
pub use options::{OnLoss, Options, RX_BUFFER_BYTES, peer_config};
pub use publish::{publish, publish_with};
pub use stage::{Proxy, STAGE_KEY_ENV, StageSummary, ZENOH_CONFIG_ENV, remote_stage, serve_stage};
pub use subscribe::subscribe;

/// The zenoh this crate is built against, for its configuration and sessions.
pub use zenoh;
