//! The peers' typed channels, carrying the same values as sp's typed transports
//! (`transport/typed.rs`): ipc-channel's `IpcSender<Rec>` of the serde struct, and iceoryx2
//! publish-subscribe of the 64-byte plain struct as a typed sample (`ZeroCopySend`), written in
//! place by the sender and read in place by the receiver.

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use ipc_channel::ipc::{IpcOneShotServer, IpcReceiver, IpcSender};
use sp::zerocopy::IntoBytes;

use super::iceoryx2::{config, stream_buffer_len};
use super::{peer_error, spin_for, unique_name};
use crate::error::{Error, Result};
use crate::transport::typed::{Pod, Rec};
use crate::transport::{Check, Fill, Link, Offer};

type Halves = (IpcSender<Rec>, IpcReceiver<Rec>);

#[derive(Debug)]
struct IpcTypedLink {
    tx: IpcSender<Rec>,
    rx: IpcReceiver<Rec>,
    value: Rec,
    buf: Vec<u8>,
}

/// ipc-channel, driver side: a one-shot server whose name goes to the child.
pub(in crate::transport) fn offer_ipc(size: usize) -> Result<Offer> {
    let (server, name) = IpcOneShotServer::<Halves>::new()?;
    Ok(Offer {
        extra: name,
        fds: Vec::new(),
        finish: Box::new(move || {
            let (_, (tx, rx)) = server.accept().map_err(peer_error)?;
            Ok(Box::new(IpcTypedLink::new(tx, rx, size)) as _)
        }),
    })
}

/// ipc-channel, child side: creates both channels and sends the driver its halves.
pub(in crate::transport) fn accept_ipc(size: usize, name: &str) -> Result<Box<dyn Link>> {
    let bootstrap = IpcSender::<Halves>::connect(name.to_owned())?;
    let (down_tx, down_rx) = ipc_channel::ipc::channel::<Rec>()?;
    let (up_tx, up_rx) = ipc_channel::ipc::channel::<Rec>()?;
    bootstrap.send((down_tx, up_rx)).map_err(peer_error)?;
    Ok(Box::new(IpcTypedLink::new(up_tx, down_rx, size)))
}

impl IpcTypedLink {
    fn new(tx: IpcSender<Rec>, rx: IpcReceiver<Rec>, size: usize) -> Self {
        Self {
            tx,
            rx,
            value: Rec::default(),
            buf: vec![0; size],
        }
    }
}

impl Link for IpcTypedLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        fill(&mut self.buf);
        self.value.set_from(&self.buf);
        self.tx.send(self.value.clone()).map_err(peer_error)
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let value = self.rx.recv().map_err(peer_error)?;
        value.write_to(&mut self.buf)?;
        check(&self.buf)
    }
}

struct Iceoryx2TypedLink {
    publisher: Publisher<ipc::Service, Pod, ()>,
    subscriber: Subscriber<ipc::Service, Pod, ()>,
    // Dropped last: the ports above belong to it.
    _node: Node<ipc::Service>,
}

/// iceoryx2, driver side: the driver's pid and the service names go to the child as
/// `pid\ndown\nup`.
pub(in crate::transport) fn offer_iceoryx2(size: usize) -> Result<Offer> {
    check_pod_size(size)?;
    let pid = std::process::id();
    let base = unique_name("iox2t");
    let down = format!("{base}/down");
    let up = format!("{base}/up");
    let extra = format!("{pid}\n{down}\n{up}");
    Ok(Offer {
        extra,
        fds: Vec::new(),
        finish: Box::new(move || Ok(Box::new(Iceoryx2TypedLink::open(pid, &down, &up)?) as _)),
    })
}

/// iceoryx2, child side: the same services, the other way round.
pub(in crate::transport) fn accept_iceoryx2(size: usize, extra: &str) -> Result<Box<dyn Link>> {
    check_pod_size(size)?;
    let mut lines = extra.lines();
    let (Some(pid), Some(down), Some(up)) = (lines.next(), lines.next(), lines.next()) else {
        return Err(Error::Child(
            "iceoryx2-typed: expected a pid and two service names".into(),
        ));
    };
    let pid = pid
        .parse()
        .map_err(|_| Error::Child("iceoryx2-typed: bad pid".into()))?;
    Ok(Box::new(Iceoryx2TypedLink::open(pid, up, down)?))
}

fn check_pod_size(size: usize) -> Result<()> {
    if size == size_of::<Pod>() {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "iceoryx2-typed carries 64-byte values only, not {size} B"
    )))
}

impl Iceoryx2TypedLink {
    fn open(pid: u32, send_on: &str, receive_on: &str) -> Result<Self> {
        set_log_level(LogLevel::Error);
        let node = NodeBuilder::new()
            .config(&config(pid)?)
            .create::<ipc::Service>()
            .map_err(peer_error)?;
        let buffer = stream_buffer_len(size_of::<Pod>());
        let open = |name: &str| {
            node.service_builder(&ServiceName::new(name).map_err(peer_error)?)
                .publish_subscribe::<Pod>()
                .max_publishers(1)
                .max_subscribers(1)
                .history_size(0)
                .subscriber_max_buffer_size(buffer)
                .enable_safe_overflow(false)
                .open_or_create()
                .map_err(peer_error)
        };
        let out = open(send_on)?;
        let inbound = open(receive_on)?;
        let publisher = out
            .publisher_builder()
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(peer_error)?;
        let subscriber = inbound
            .subscriber_builder()
            .buffer_size(buffer)
            .create()
            .map_err(peer_error)?;
        Ok(Self {
            publisher,
            subscriber,
            _node: node,
        })
    }
}

impl Link for Iceoryx2TypedLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        // `loan` default-initialises the sample in shared memory; the message is written in place.
        let mut sample = self.publisher.loan().map_err(peer_error)?;
        fill(sample.payload_mut().as_mut_bytes());
        sample.send().map_err(peer_error)?;
        Ok(())
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let sample = spin_for(|| self.subscriber.receive().map_err(peer_error))?;
        check(sample.payload().as_bytes())
    }
}
