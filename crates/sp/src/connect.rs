//! Making a typed channel: [`spawn`] a child and [`adopt`] in it, or [`connect`] over any sp-core
//! channel (the sp-shm handshake, then one HELLO each way), or [`channel`] within one process.

use std::os::fd::{AsFd, OwnedFd};
use std::process::Command;

use sp_core::{Channel, Child, SocketKind};
use sp_shm::Duplex;

use crate::config::Config;
use crate::error::{Error, HelloMismatch, Result, Violation};
use crate::receiver::Receiver;
use crate::sender::{Control, Sender};
use crate::value::Value;
use crate::wire::{self, Hello};

/// `socketpair(2)` + a child process: starts `cmd` as a child and connects to it; the child calls
/// [`adopt`] with the types the other way round (`adopt::<In, Out>`).
///
/// The child gets one end of a seqpacket pair (sp-core; by default handed over after exec, so the
/// child is started by `posix_spawn`, not `fork`, whose cost grows with the parent's memory; the
/// parent's copy is closed at once, so the child's death is seen), the two sides set up one ring
/// per direction (sp-shm's handshake) and exchange a HELLO that checks the typed protocol's
/// version and that each side's types are encoded alike. If any of it fails, the child is killed
/// and reaped.
///
/// # Errors
/// As `Command::spawn`; [`Error::Shm`] for a refused ring; [`Error::Protocol`] with
/// [`Violation::Hello`] for a peer whose types or version differ; [`Error::PeerGone`] if the child
/// exits before it is connected.
///
/// # Examples
/// ```no_run
/// // The parent sends jobs (`u64`) and receives results (`String`).
/// let config = sp::Config::new();
/// let (mut child, mut jobs, mut results) =
///     sp::spawn::<u64, String>(&mut std::process::Command::new("my-worker"), &config)?;
/// jobs.send(&42)?;
/// println!("{}", results.recv()?);
/// drop(jobs);
/// child.wait()?;
/// // In my-worker: `let (results, jobs) = sp::adopt::<String, u64>(&sp::Config::new())?;`
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn spawn<Out: Value, In: Value>(
    cmd: &mut Command,
    config: &Config,
) -> Result<(Child, Sender<Out>, Receiver<In>)> {
    let hello = hello_bytes::<Out, In>();
    let (mut child, duplex) =
        sp_shm::spawn_with_greeting(cmd, config.spawn, &config.ring, Some(&hello))?;
    match from_duplex::<Out, In>(duplex, config) {
        Ok((tx, rx)) => Ok((child, tx, rx)),
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(err)
        }
    }
}

/// In a child started by [`spawn`]: takes the inherited end and connects to the parent. `Out` is
/// what this side sends (the parent's `In`), `In` what it receives (the parent's `Out`).
///
/// # Errors
/// As [`sp_core::adopt`] (wrapped in [`Error::Core`]) and [`spawn`].
pub fn adopt<Out: Value, In: Value>(config: &Config) -> Result<(Sender<Out>, Receiver<In>)> {
    let hello = hello_bytes::<Out, In>();
    let duplex = sp_shm::adopt_with_greeting(&config.ring, Some(&hello))?;
    from_duplex(duplex, config)
}

/// Connects over `channel`, a connected sp-core seqpacket channel whose other end calls
/// `connect::<In, Out>` too (for a child that was handed its end some other way than [`spawn`]).
///
/// # Errors
/// As [`spawn`], without the child.
pub fn connect<Out: Value, In: Value>(
    channel: Channel,
    config: &Config,
) -> Result<(Sender<Out>, Receiver<In>)> {
    let hello = hello_bytes::<Out, In>();
    let duplex = Duplex::connect_with_greeting(channel, &config.ring, Some(&hello))?;
    from_duplex(duplex, config)
}

/// A typed channel within one process (between threads, or for tests): the same ring, control
/// socket and blobs as between processes. Its receiver decodes records in place in the ring (as
/// [`Receiver::trust_peer`] allows between processes): the sender writing them is in this
/// process too.
///
/// # Errors
/// When memory or descriptors run out, or for a bad ring configuration.
///
/// # Examples
/// ```
/// let (mut tx, mut rx) = sp::channel::<Vec<u32>>(&sp::Config::new())?;
/// let worker = std::thread::spawn(move || rx.recv());
/// tx.send(&vec![1, 2, 3])?;
/// assert_eq!(worker.join().unwrap()?, [1, 2, 3]);
/// # Ok::<(), sp::Error>(())
/// ```
pub fn channel<T: Value>(config: &Config) -> Result<(Sender<T>, Receiver<T>)> {
    let (producer, consumer) = sp_shm::channel(&config.ring)?;
    let (ours, theirs) = Channel::pair(SocketKind::SeqPacket)?;
    let control = control_sender(&ours)?;
    let (tx, _) = ours.split();
    let (_, rx) = theirs.split();
    Ok((
        Sender::new(producer, Control::new(tx, control), config),
        Receiver::new(consumer, rx, config).in_process(),
    ))
}

/// This side's HELLO for a duplex that sends `Out` and receives `In`.
fn hello_of<Out: Value, In: Value>() -> Hello {
    Hello {
        sends: Out::ENCODING,
        receives: In::ENCODING,
    }
}

/// [`hello_of`] encoded: the greeting sp-shm's handshake sends right after this side's READY.
fn hello_bytes<Out: Value, In: Value>() -> [u8; wire::HELLO_LEN] {
    wire::encode_hello(hello_of::<Out, In>())
}

/// After the sp-shm handshake, which sent this side's HELLO right after its READY (the sp-shm
/// greeting, so neither side waits for the other's READY before sending it): the peer's HELLO
/// is checked, then the halves.
fn from_duplex<Out: Value, In: Value>(
    duplex: Duplex,
    config: &Config,
) -> Result<(Sender<Out>, Receiver<In>)> {
    let (producer, consumer, mut control) = duplex.into_parts();
    check_hello(&mut control, hello_of::<Out, In>(), config)?;
    let poll_fd = control_sender(&control)?;
    let (tx, rx) = control.split();
    Ok((
        Sender::new(producer, Control::new(tx, poll_fd), config),
        Receiver::new(consumer, rx, config),
    ))
}

/// One direction of a typed channel, from this side's end: a ring it produces into (handed over
/// one way) and a control channel to the consumer (for ATTACH), over which the HELLO has been
/// sent ([`send_hello`] with [`one_way_sender`]) and is now checked.
pub(crate) fn sender_over<T: Value>(
    producer: sp_shm::Producer,
    mut control: Channel,
    config: &Config,
) -> Result<Sender<T>> {
    check_hello(&mut control, one_way_sender::<T>(), config)?;
    let poll_fd = control_sender(&control)?;
    let (tx, _) = control.split();
    Ok(Sender::new(producer, Control::new(tx, poll_fd), config))
}

/// The other end of [`sender_over`]: a ring this side consumes and the control channel from the
/// producer, whose HELLO ([`one_way_receiver`]) has been sent and is now checked.
pub(crate) fn receiver_over<T: Value>(
    consumer: sp_shm::Consumer,
    mut control: Channel,
    config: &Config,
) -> Result<Receiver<T>> {
    check_hello(&mut control, one_way_receiver::<T>(), config)?;
    let (_, rx) = control.split();
    Ok(Receiver::new(consumer, rx, config))
}

/// The HELLO of a side that only sends `T` (the direction it does not use is not compared).
pub(crate) fn one_way_sender<T: Value>() -> Hello {
    Hello {
        sends: T::ENCODING,
        receives: crate::value::Encoding::Custom,
    }
}

/// The HELLO of a side that only receives `T`.
pub(crate) fn one_way_receiver<T: Value>() -> Hello {
    Hello {
        sends: crate::value::Encoding::Custom,
        receives: T::ENCODING,
    }
}

/// Sends this side's HELLO. The peer's is read by [`check_hello`]; sending first on both sides
/// means neither waits for the other to start.
pub(crate) fn send_hello(control: &Channel, ours: Hello) -> Result<()> {
    control.send(&wire::encode_hello(ours), &[])?;
    Ok(())
}

/// Receives the peer's HELLO (within the handshake time limit) and checks it against ours.
fn check_hello(control: &mut Channel, ours: Hello, config: &Config) -> Result<()> {
    let reply = control
        .recv_timeout(config.setup_limit())
        .map_err(|err| match err {
            sp_core::RecvTimeoutError::Timeout => {
                Error::Protocol(Violation::Hello(HelloMismatch::NotHello))
            }
            sp_core::RecvTimeoutError::Broken(err) => err.into(),
        })?;
    if !reply.fds.is_empty() {
        return Err(Error::Protocol(Violation::Hello(HelloMismatch::NotHello)));
    }
    wire::check_hello(&reply.bytes, ours).map_err(|why| Error::Protocol(Violation::Hello(why)))
}

/// Makes the control socket non-blocking (a full socket buffer becomes a wait the sender can
/// bound) and returns the duplicate the sender polls; both close-on-exec.
fn control_sender(channel: &Channel) -> Result<OwnedFd> {
    rustix::io::ioctl_fionbio(channel.as_fd(), true).map_err(|err| Error::Os(err.into()))?;
    rustix::io::fcntl_dupfd_cloexec(channel.as_fd(), 0).map_err(|err| Error::Os(err.into()))
}
