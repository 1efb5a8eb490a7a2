//! The async channel (`sp_core::tokio`, feature `tokio`) under both runtimes: round trips with
//! descriptors, a child that echoes through `tokio::process`, receives and sends cancelled at
//! random under load, a peer killed while awaited, and every hostile-peer trial of `hostile.rs`
//! run against the async receiver.

use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use sp_core::tokio::Channel as AsyncChannel;
use sp_core::{Channel, End, Error, Message, SocketKind, TryRecvError};
use tokio::runtime::{Builder, Runtime};

use crate::hostile::HostileRx;
use crate::pairs::kind_name;
use crate::{
    RECV_LIMIT, ROLE_ENV, RecvWithin, TestResult, XorShift, assert_cloexec, memfd_with,
    read_all_at_0, trial,
};

/// The two runtimes every async trial runs under.
const FLAVOURS: [&str; 2] = ["current_thread", "multi_thread"];

pub fn trials() -> Vec<Trial> {
    // tokio's signal driver (which `tokio::process` needs) opens a socketpair once per process,
    // the first time a runtime is built, and keeps it: open it now, before any trial's
    // descriptor snapshot.
    drop(runtime("current_thread"));
    let mut trials = Vec::new();
    for flavour in FLAVOURS {
        for kind in [SocketKind::SeqPacket, SocketKind::Stream] {
            let k = kind_name(kind);
            trials.push(trial(
                format!("tokio_{flavour}_{k}_round_trips_with_fds_in_order"),
                move || runtime(flavour).block_on(round_trips(kind)),
            ));
            trials.push(trial(
                format!("tokio_{flavour}_{k}_recv_cancelled_at_random_loses_and_repeats_nothing"),
                move || runtime(flavour).block_on(recv_cancelled_at_random(kind)),
            ));
        }
        trials.push(trial(
            format!("tokio_{flavour}_stream_send_cancelled_mid_frame_keeps_frames_whole"),
            move || runtime(flavour).block_on(send_cancelled_mid_frame()),
        ));
        trials.push(trial(
            format!("tokio_{flavour}_child_echoes_through_tokio_process"),
            move || runtime(flavour).block_on(child_echoes()),
        ));
        trials.push(trial(
            format!("tokio_{flavour}_peer_killed_while_awaited_is_peer_gone_within_a_bound"),
            move || runtime(flavour).block_on(peer_killed_while_awaited()),
        ));
    }
    trials.extend(crate::hostile::trials_for::<AsyncRx>("tokio_"));
    trials
}

/// A runtime of the named flavour with every driver on.
pub fn runtime(flavour: &str) -> Runtime {
    let mut builder = if flavour == "current_thread" {
        Builder::new_current_thread()
    } else {
        let mut b = Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    builder.enable_all().build().expect("tokio runtime")
}

/// `fut` bounded by [`RECV_LIMIT`]; running out of time fails the trial.
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(RECV_LIMIT, fut)
        .await
        .map_err(|_| format!("{what}: nothing within {RECV_LIMIT:?}"))
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..len)
        .map(|i| (seq as u8).wrapping_add(i as u8))
        .collect();
    if len >= 8 {
        bytes[..8].copy_from_slice(&seq.to_le_bytes());
    }
    bytes
}

/// Messages of growing sizes (up to 300 KiB, more than a stream's socket buffer, so sends are
/// taken in parts) with a memfd on every seventh, sent by one task and checked by another.
async fn round_trips(kind: SocketKind) -> TestResult {
    const N: u64 = 400;
    let (mut a, mut b) = AsyncChannel::pair(kind)?;
    // A seqpacket record must fit the socket's send buffer (about 200 KiB by default).
    let max = if kind == SocketKind::Stream {
        300 << 10
    } else {
        100 << 10
    };
    let len = move |seq: u64| 8 + (seq as usize * 769) % max;
    let sender = tokio::spawn(async move {
        for seq in 0..N {
            let memfd = (seq % 7 == 0).then(|| memfd_with("sp-it-tokio-rt", &seq.to_le_bytes()));
            let fds: Vec<BorrowedFd<'_>> = memfd.iter().map(AsFd::as_fd).collect();
            a.send(&payload(seq, len(seq)), &fds).await?;
        }
        Ok::<_, Error>(a)
    });
    let mut msg = Message::default();
    for seq in 0..N {
        within("recv", b.recv_into(&mut msg)).await??;
        assert_eq!(msg.bytes, payload(seq, len(seq)), "message {seq}");
        assert_eq!(msg.fds.len(), usize::from(seq % 7 == 0), "message {seq}");
        for fd in &msg.fds {
            assert_cloexec(fd);
            assert_eq!(read_all_at_0(fd), seq.to_le_bytes());
        }
    }
    let a = sender.await.map_err(|e| e.to_string())??;
    drop(a);
    let res = within("recv after close", b.recv()).await?;
    assert!(matches!(res, Err(Error::PeerGone)), "{res:?}");
    Ok(())
}

/// A blocking thread sends numbered messages in bursts; the async receiver wraps every receive in
/// a timeout (zero, or up to 2 ms), so that many receives are cancelled while they wait, and must
/// still see each message exactly once, in order. On a stream pair the frames are cut at random places
/// (the sender writes 3-byte chunks at times), so cancellations hit half-received frames.
async fn recv_cancelled_at_random(kind: SocketKind) -> TestResult {
    let n: u64 = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let (tx, rx) = Channel::pair(kind)?;
    let mut rx = AsyncChannel::new(rx)?;
    // The sender goes in bursts of 1 to 8 messages with gaps of up to 200 µs between them, so
    // that the receiver often finds the socket empty and its receive is cancelled while it waits.
    let sender = std::thread::spawn(move || -> Result<(), Error> {
        let mut rng = XorShift::new(0xb0b5);
        let mut seq = 0;
        while seq < n {
            for _ in 0..=rng.below(8) {
                if seq < n {
                    tx.send(&payload(seq, 8 + (seq % 24) as usize), &[])?;
                    seq += 1;
                }
            }
            let gap = Instant::now() + Duration::from_micros(rng.below(200));
            while Instant::now() < gap {
                std::hint::spin_loop();
            }
        }
        Ok(())
    });
    let mut rng = XorShift::new(0x7031_0000 + kind_name(kind).len() as u64);
    let mut msg = Message::default();
    let (mut next, mut cancelled) = (0u64, 0u64);
    let deadline = Instant::now() + RECV_LIMIT * 2;
    while next < n {
        assert!(Instant::now() < deadline, "stuck at message {next}");
        // tokio's timer counts milliseconds: a zero timeout cancels every receive that waits at
        // its first poll, a longer one cancels later, from the reactor.
        let limit = match rng.below(3) {
            0 => Duration::from_micros(rng.below(2000)),
            _ => Duration::ZERO,
        };
        match tokio::time::timeout(limit, rx.recv_into(&mut msg)).await {
            Ok(res) => {
                res?;
                assert_eq!(msg.bytes, payload(next, 8 + (next % 24) as usize));
                next += 1;
            }
            Err(_) => cancelled += 1,
        }
    }
    sender.join().map_err(|_| "sender panicked")??;
    let res = within("recv after the last", rx.recv()).await?;
    assert!(matches!(res, Err(Error::PeerGone)), "{res:?}");
    assert!(cancelled > 0, "no receive was cancelled");
    eprintln!("{n} messages, {cancelled} receives cancelled");
    Ok(())
}

/// Sends of 256 KiB frames on a stream, each cancelled after 0 to 200 µs while a slow reader
/// drains the socket: a cancelled send either sent nothing (it is sent again) or left the rest of
/// its frame in the sender ([`is_flushed`](sp_core::tokio::Sender::is_flushed) false), which the
/// next send finishes first. The reader must see every frame whole, once, in order.
async fn send_cancelled_mid_frame() -> TestResult {
    const N: u64 = 60;
    const LEN: usize = 256 << 10;
    let (tx, rx) = Channel::pair(SocketKind::Stream)?;
    let mut tx = AsyncChannel::new(tx)?;
    let reader = std::thread::spawn(move || -> Result<u64, String> {
        let mut rx = rx;
        for seq in 0..N {
            let msg = rx.recv_within().map_err(|e| e.to_string())?;
            if msg.bytes != payload(seq, LEN) {
                return Err(format!("frame {seq} damaged or out of order"));
            }
        }
        match rx.recv_within() {
            Err(Error::PeerGone) => Ok(N),
            other => Err(format!("after the last frame: {other:?}")),
        }
    });
    let mut rng = XorShift::new(0x5e4d);
    let (mut seq, mut taken_in_part, mut not_taken) = (0u64, 0u64, 0u64);
    while seq < N {
        let limit = Duration::from_micros(rng.below(200));
        let bytes = payload(seq, LEN);
        match tokio::time::timeout(limit, tx.sender().send(&bytes, &[])).await {
            Ok(Ok(())) => seq += 1,
            Ok(Err(err)) => {
                drop(tx);
                let reader = reader.join().map_err(|_| "reader panicked")?;
                return Err(format!("send {seq}: {err}; the reader: {reader:?}").into());
            }
            Err(_) if tx.sender().is_flushed() => not_taken += 1,
            Err(_) => {
                // Finish this frame before the next send, so that a cancelled next send is
                // judged by its own frame alone.
                taken_in_part += 1;
                seq += 1;
                within("flush", tx.sender().flush()).await??;
            }
        }
    }
    within("flush", tx.sender().flush()).await??;
    drop(tx);
    assert_eq!(reader.join().map_err(|_| "reader panicked")??, N);
    assert!(taken_in_part > 0, "no send was cancelled mid-frame");
    eprintln!("{taken_in_part} sends cancelled mid-frame, {not_taken} before any byte");
    Ok(())
}

/// A child (this binary, role `tokio_echo`) adopts its end inside a tokio runtime and echoes
/// every message with its descriptors; the parent spawned it with `tokio::process`.
async fn child_echoes() -> TestResult {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, "tokio_echo");
    let opts = sp_core::SpawnOptions::new().parent_death_signal(sp_core::Signal::KILL);
    let (mut child, mut channel) = sp_core::tokio::spawn_channel(&mut cmd, opts)?;
    assert!(child.pidfd().is_some() || child.id().is_some());
    for seq in 0..200u64 {
        let memfd = memfd_with("sp-it-tokio-echo", &seq.to_le_bytes());
        let fds = [memfd.as_fd()];
        let fds = if seq % 3 == 0 { &fds[..] } else { &[][..] };
        channel.send(&payload(seq, 64), fds).await?;
        let msg = within("echo", channel.recv()).await??;
        assert_eq!(msg.bytes, payload(seq, 64));
        assert_eq!(msg.fds.len(), fds.len());
        for fd in &msg.fds {
            assert_cloexec(fd);
            assert_eq!(read_all_at_0(fd), seq.to_le_bytes());
        }
    }
    drop(channel);
    let status = within("child exit", child.wait()).await??;
    assert!(status.success(), "child: {status:?}");
    Ok(())
}

/// A child that blocks in `recv` is killed while this side awaits a message from it: the await
/// ends with `PeerGone` within a second.
async fn peer_killed_while_awaited() -> TestResult {
    let mut cmd = tokio::process::Command::new(std::env::current_exe()?);
    cmd.env(ROLE_ENV, "ready_then_block");
    let opts = sp_core::SpawnOptions::new().parent_death_signal(sp_core::Signal::KILL);
    let (mut child, channel) = sp_core::tokio::spawn_channel(&mut cmd, opts)?;
    let (_tx, mut rx) = channel.split();
    assert_eq!(within("ready", rx.recv()).await??.bytes, b"ready");
    let waiter = tokio::spawn(async move {
        let res = rx.recv().await;
        (res, Instant::now())
    });
    // The waiter is parked in the reactor once it has been polled; yielding lets it get there on
    // either runtime (and a kill before that must give the same answer).
    tokio::task::yield_now().await;
    let killed_at = Instant::now();
    child.start_kill()?;
    let (res, woke_at) = within("waiter", waiter).await?.map_err(|e| e.to_string())?;
    assert!(matches!(res, Err(Error::PeerGone)), "{res:?}");
    let latency = woke_at.saturating_duration_since(killed_at);
    assert!(
        latency < Duration::from_secs(1),
        "woke {latency:?} after the kill"
    );
    let status = within("child exit", child.wait()).await??;
    assert_eq!(
        status.signal(),
        Some(rustix::process::Signal::KILL.as_raw())
    );
    Ok(())
}

/// The child role `tokio_echo`: echoes every message with its descriptors until the parent
/// leaves.
pub fn role_tokio_echo() -> Result<(), String> {
    let rt = runtime("current_thread");
    rt.block_on(async {
        let mut channel = sp_core::tokio::adopt().map_err(|e| e.to_string())?;
        loop {
            match channel.recv().await {
                Ok(msg) => {
                    let fds: Vec<BorrowedFd<'_>> = msg.fds.iter().map(OwnedFd::as_fd).collect();
                    channel
                        .send(&msg.bytes, &fds)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Err(Error::PeerGone) => return Ok(()),
                Err(err) => return Err(err.to_string()),
            }
        }
    })
}

/// The async receiver under the hostile trials: each bounded receive is one `block_on` of
/// `recv` under a current-thread runtime.
pub struct AsyncRx {
    // Dropped before the runtime, whose reactor it is registered with.
    channel: AsyncChannel,
    rt: Runtime,
}

impl HostileRx for AsyncRx {
    fn over(end: End) -> Self {
        let rt = runtime("current_thread");
        let channel = {
            let _entered = rt.enter();
            AsyncChannel::new(Channel::new(end).expect("a seqpacket or stream end"))
                .expect("register with the reactor")
        };
        Self { channel, rt }
    }

    fn try_recv(&mut self) -> Result<Message, TryRecvError> {
        self.channel.receiver().as_blocking().try_recv()
    }
}

impl RecvWithin for AsyncRx {
    fn recv_within(&mut self) -> Result<Message, Error> {
        let channel = &mut self.channel;
        self.rt
            .block_on(async { tokio::time::timeout(RECV_LIMIT, channel.recv()).await })
            .unwrap_or_else(|_| panic!("no message within {RECV_LIMIT:?}"))
    }

    fn recv_into_within(&mut self, msg: &mut Message) -> Result<(), Error> {
        let channel = &mut self.channel;
        self.rt
            .block_on(async { tokio::time::timeout(RECV_LIMIT, channel.recv_into(msg)).await })
            .unwrap_or_else(|_| panic!("no message within {RECV_LIMIT:?}"))
    }
}
