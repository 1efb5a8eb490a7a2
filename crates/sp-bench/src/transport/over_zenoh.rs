//! Leaving the machine (feature `zenoh`): `zenoh`, zenoh's own publisher and subscriber of the
//! harness's bytes, and `sp-zenoh`, the same stream as typed sp values through the sp-zenoh
//! gateways. Both ends are on this machine, connected by zenoh over TCP on 127.0.0.1 (the driver
//! listens on a free port, the child connects; multicast scouting off).
//!
//! - `zenoh`: each side puts every message with `CongestionControl::Block` on its key and
//!   receives the other side's from a subscriber's default FIFO handler, reading the payload in
//!   place, as zenoh's own examples do.
//! - `sp-zenoh`: each side writes [`Raw`] values in place into a local sp ring
//!   (`send_encoded_with`, as `send_with` writes plain data) whose receiver a
//!   [`sp_zenoh::publish`] gateway forwards; a [`sp_zenoh::subscribe`] gateway delivers the other
//!   side's values into a second ring, read with `recv_encoded` (the bytes checked in place).
//!   Everything sp-zenoh adds is on the path: two ring hops, the gateway's thread, its headers,
//!   batching and sequence checks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sp::{EncodeError, Encoding, Value};
use zenoh::Wait;
use zenoh::handlers::FifoChannelHandler;
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;
use zenoh::sample::Sample;

use crate::error::{Error, Result};
use crate::transport::{Check, Fill, Link, Offer};

/// How long set-up may take (a session, the other side's declarations).
const SETUP_LIMIT: Duration = Duration::from_secs(10);

/// The harness's message as a typed value whose encoding is its bytes (a hand-written
/// [`Value`]: one copy into the ring slot, none out of it with `recv_encoded`).
#[derive(Debug, Default)]
struct Raw(Vec<u8>);

impl Value for Raw {
    const ENCODING: Encoding = Encoding::Custom;

    fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let out = out.get_mut(..self.0.len()).ok_or(EncodeError::BufferFull)?;
        out.copy_from_slice(&self.0);
        Ok(self.0.len())
    }

    fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(self.0.len())
    }

    fn decode(bytes: &[u8]) -> Result<Self, sp::DecodeError> {
        Ok(Self(bytes.to_vec()))
    }
}

fn zenoh_error(err: impl std::fmt::Display) -> Error {
    Error::Peer(format!("zenoh: {err}"))
}

/// Driver side: a session listening on a free port; the child is told the port and the keys.
pub(super) fn offer(size: usize, typed: bool) -> Result<Offer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = format!(
        "sp-bench/{}/{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let endpoint = format!("tcp/127.0.0.1:{port}");
    let config = sp_zenoh::peer_config(&[&endpoint], &[]).map_err(zenoh_error)?;
    let session = zenoh::open(config).wait().map_err(zenoh_error)?;
    let keys = (format!("{prefix}/down"), format!("{prefix}/up"));
    Ok(Offer {
        extra: format!("{endpoint} {prefix}"),
        fds: Vec::new(),
        finish: Box::new(move || link(session, &keys.0, &keys.1, size, typed)),
    })
}

/// Child side: connects to the driver's endpoint.
pub(super) fn accept(size: usize, typed: bool, extra: &str) -> Result<Box<dyn Link>> {
    let (endpoint, prefix) = extra
        .split_once(' ')
        .ok_or_else(|| Error::Child(format!("bad zenoh offer {extra:?}")))?;
    let config = sp_zenoh::peer_config(&[], &[endpoint]).map_err(zenoh_error)?;
    let session = zenoh::open(config).wait().map_err(zenoh_error)?;
    let (down, up) = (format!("{prefix}/down"), format!("{prefix}/up"));
    link(session, &up, &down, size, typed)
}

fn link(
    session: zenoh::Session,
    send_key: &str,
    recv_key: &str,
    size: usize,
    typed: bool,
) -> Result<Box<dyn Link>> {
    if typed {
        return Ok(Box::new(GatewayLink::new(
            session, send_key, recv_key, size,
        )?));
    }
    let subscriber = session
        .declare_subscriber(recv_key.to_owned())
        .wait()
        .map_err(zenoh_error)?;
    let publisher = session
        .declare_publisher(send_key.to_owned())
        .congestion_control(CongestionControl::Block)
        .wait()
        .map_err(zenoh_error)?;
    wait_matched(&publisher)?;
    Ok(Box::new(ZenohLink {
        _session: session,
        publisher,
        subscriber,
        size,
    }))
}

/// Waits (at most [`SETUP_LIMIT`]) until zenoh reports a subscriber for `publisher`: the other
/// side has declared its own, so nothing put from now on is dropped for want of one.
fn wait_matched(publisher: &Publisher<'_>) -> Result<()> {
    let listener = publisher.matching_listener().wait().map_err(zenoh_error)?;
    if publisher
        .matching_status()
        .wait()
        .map_err(zenoh_error)?
        .matching()
    {
        return Ok(());
    }
    loop {
        match listener.recv_timeout(SETUP_LIMIT) {
            Ok(Some(status)) if status.matching() => return Ok(()),
            Ok(Some(_)) => {}
            Ok(None) => return Err(Error::TimedOut("no zenoh subscriber on the other side")),
            Err(err) => return Err(zenoh_error(err)),
        }
    }
}

struct ZenohLink {
    _session: zenoh::Session,
    publisher: Publisher<'static>,
    subscriber: Subscriber<FifoChannelHandler<Sample>>,
    size: usize,
}

impl std::fmt::Debug for ZenohLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZenohLink")
            .field("size", &self.size)
            .finish()
    }
}

impl Link for ZenohLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        // zenoh takes the buffer (no copy here; it copies it into its batch).
        let mut buf = vec![0; self.size];
        fill(&mut buf);
        self.publisher.put(buf).wait().map_err(zenoh_error)
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let sample = self
            .subscriber
            .recv()
            .map_err(|_| Error::Child("the zenoh subscriber closed".into()))?;
        check(&sample.payload().to_bytes())
    }
}

/// The sp-zenoh link: rings and gateways on both sides.
#[derive(Debug)]
struct GatewayLink {
    /// Taken when the link is dropped, so that the publishing gateway ends the stream.
    tx: Option<sp::Sender<Raw>>,
    rx: sp::Receiver<Raw>,
    size: usize,
    // Dropped after the channels above: the publishing gateway sees its sender gone and ends
    // the stream; the subscribing one ends when the other side's does.
    outbound: Option<sp_zenoh::Gateway>,
    /// Taken to say why, when the receiver finds its sender gone.
    inbound: Option<sp_zenoh::Gateway>,
    _session: zenoh::Session,
}

impl GatewayLink {
    fn new(session: zenoh::Session, send_key: &str, recv_key: &str, size: usize) -> Result<Self> {
        let config = sp::Config::new().idle(sp::IdleStrategy::park());
        let options = sp_zenoh::Options::new().connect_timeout(SETUP_LIMIT);
        let (tx, out_rx) = sp::channel::<Raw>(&config)?;
        let (in_tx, rx) = sp::channel::<Raw>(&config)?;
        let inbound =
            sp_zenoh::subscribe(&session, recv_key, in_tx, &options).map_err(zenoh_error)?;
        let outbound =
            sp_zenoh::publish(&session, send_key, out_rx, &options).map_err(zenoh_error)?;
        Ok(Self {
            tx: Some(tx),
            rx,
            size,
            outbound: Some(outbound),
            inbound: Some(inbound),
            _session: session,
        })
    }
}

impl Drop for GatewayLink {
    /// Ends this side's stream and waits until the other side has all of it (or is gone), so
    /// that a reply sent just before is not cut off by this side's gateway going away.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(outbound) = self.outbound.take() {
            let _ = outbound.join();
        }
    }
}

impl Link for GatewayLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        let tx = self.tx.as_mut().ok_or(sp::Error::PeerGone)?;
        Ok(tx.send_encoded_with(self.size, |slot| fill(slot))?)
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        match self.rx.recv_encoded(|bytes, _| check(bytes)) {
            Ok(res) => res,
            Err(sp::Error::PeerGone) => match self.inbound.take().map(sp_zenoh::Gateway::join) {
                Some(Err(err)) => Err(zenoh_error(err)),
                _ => Err(sp::Error::PeerGone.into()),
            },
            Err(err) => Err(err.into()),
        }
    }
}
