//! `Select`: fairness and sp-core channels within one process; several children with one killed
//! mid-stream; the park/wake path under a ping-pong stress that fails on a single lost wake-up.

use std::time::Duration;

use libtest_mimic::Trial;
use sp::{Config, Error, Select, TryRecvError};

use crate::types::Rec;
use crate::{TestResult, child_command, count, reap, trial};

/// How long one `ready` may wait at most.
const READY_LIMIT: Duration = Duration::from_secs(5);
/// In the ping-pong stress, a `ready` that takes this long slept through a wake-up (an answer
/// takes well under a millisecond; `ready_timeout` still finds the value after its timeout, so a
/// lost wake-up shows as a stall, not an error).
const STALL: Duration = Duration::from_secs(2);

pub(crate) fn trials() -> Vec<Trial> {
    vec![
        trial(
            "select_fair_over_typed_and_channels",
            fair_over_typed_and_channels,
        ),
        trial("select_children_one_killed", children_one_killed),
        trial("select_park_wake_stress", park_wake_stress),
    ]
}

fn config() -> Config {
    Config::new().capacity(64 << 10)
}

/// Two receivers that always have values are served in turn; an sp-core channel is ready when a
/// message is, and again (end of file) when its peer has gone.
fn fair_over_typed_and_channels() -> TestResult {
    let (mut tx_a, mut rx_a) = sp::channel::<u64>(&config()).map_err(|e| e.to_string())?;
    let (mut tx_b, mut rx_b) = sp::channel::<Rec>(&config()).map_err(|e| e.to_string())?;
    let (peer, mut channel) = sp::sp_core::Channel::pair(sp::sp_core::SocketKind::SeqPacket)
        .map_err(|e| e.to_string())?;
    for seq in 0..100 {
        tx_a.send(&seq).map_err(|e| e.to_string())?;
        tx_b.send(&Rec::new(seq)).map_err(|e| e.to_string())?;
    }
    let mut sel = Select::new().idle(0, 0);
    let a = sel.recv(&mut rx_a);
    let b = sel.recv(&mut rx_b);
    let c = sel.channel(&mut channel);
    let mut order = Vec::new();
    for _ in 0..200 {
        let i = sel.ready_timeout(READY_LIMIT).map_err(|e| e.to_string())?;
        if i == a {
            sel.receiver::<u64>(a)
                .ok_or("a")?
                .try_recv()
                .map_err(|e| e.to_string())?;
        } else if i == b {
            sel.receiver::<Rec>(b)
                .ok_or("b")?
                .try_recv()
                .map_err(|e| e.to_string())?;
        } else {
            return Err(format!("index {i} ready with nothing sent on it"));
        }
        order.push(i);
    }
    if order.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("not served in turn: {order:?}"));
    }
    match sel.try_ready() {
        Err(TryRecvError::Empty) => {}
        other => return Err(format!("nothing left, yet {other:?}")),
    }
    peer.send(b"over the socket", &[])
        .map_err(|e| e.to_string())?;
    if sel.ready_timeout(READY_LIMIT).map_err(|e| e.to_string())? != c {
        return Err("the channel's message".into());
    }
    let msg = sel
        .channel_at(c)
        .ok_or("c")?
        .try_recv()
        .map_err(|e| e.to_string())?;
    if msg.bytes != b"over the socket" {
        return Err("the channel's message differs".into());
    }
    drop(peer);
    if sel.ready_timeout(READY_LIMIT).map_err(|e| e.to_string())? != c {
        return Err("the channel's end of file".into());
    }
    match sel.channel_at(c).ok_or("c")?.try_recv() {
        Err(err) if err.is_disconnected() => Ok(()),
        other => Err(format!("after the peer left: {other:?}")),
    }
}

/// Three children stream values; one is killed mid-stream. The other two are delivered whole and
/// in order; the killed one delivers an in-order prefix, then `PeerGone`, without holding up the
/// others.
fn children_one_killed() -> TestResult {
    let n = count(50_000);
    let mut children = Vec::new();
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for _ in 0..3 {
        let (child, tx, rx) =
            sp::spawn::<u8, Rec>(&mut child_command("stream", &n.to_string()), &config())
                .map_err(|e| format!("spawn: {e}"))?;
        children.push(Some(child));
        txs.push(Some(tx));
        rxs.push(rx);
    }
    let mut next = [0u64; 3];
    let mut gone = [false; 3];
    let mut sel = Select::new();
    let indexes: Vec<usize> = rxs.iter_mut().map(|rx| sel.recv(rx)).collect();
    let mut victim = children[1].take();
    while gone.iter().any(|g| !g) {
        let i = sel.ready_timeout(READY_LIMIT).map_err(|e| e.to_string())?;
        let k = indexes
            .iter()
            .position(|&x| x == i)
            .ok_or("unknown index")?;
        match sel.receiver::<Rec>(i).ok_or("receiver")?.try_recv() {
            Ok(rec) => {
                if rec != Rec::new(next[k]) {
                    return Err(format!("child {k}: expected {}, got {}", next[k], rec.seq));
                }
                next[k] += 1;
            }
            Err(err) if err.is_disconnected() => {
                gone[k] = true;
                sel.remove(i);
            }
            Err(err) => return Err(format!("child {k}: {err}")),
        }
        if k == 1
            && next[1] == n / 4
            && let Some(mut victim) = victim.take()
        {
            victim.kill().map_err(|e| e.to_string())?;
            let _ = victim.wait();
        }
        if (k == 0 || k == 2) && next[k] == n {
            // A survivor delivered everything: let it go, and expect its end of stream.
            txs[k] = None;
        }
    }
    drop(sel);
    if next[0] != n || next[2] != n {
        return Err(format!(
            "survivors delivered {} and {} of {n}",
            next[0], next[2]
        ));
    }
    if !(n / 4..n).contains(&next[1]) {
        return Err(format!("the killed child delivered {} of {n}", next[1]));
    }
    drop(txs);
    drop(rxs);
    for child in children.into_iter().flatten() {
        reap(child)?;
    }
    Ok(())
}

/// The child of `children_one_killed`: sends `n` values, then waits for the parent to leave.
pub(crate) fn stream_child(n: u64) -> TestResult {
    let (mut tx, mut rx) = sp::adopt::<Rec, u8>(&config()).map_err(|e| e.to_string())?;
    for seq in 0..n {
        tx.send(&Rec::new(seq))
            .map_err(|e| format!("send {seq}: {e}"))?;
    }
    match rx.recv() {
        Err(Error::PeerGone) => Ok(()),
        other => Err(format!("waiting for the parent to leave: {other:?}")),
    }
}

/// Ping-pong with three children through a `Select` that parks at once: every answer needs a
/// park and a wake-up, so one lost wake-up fails the trial (`ready_timeout`) instead of hanging.
fn park_wake_stress() -> TestResult {
    let rounds = count(20_000);
    let parked = Config::new()
        .capacity(64 << 10)
        .idle(sp::IdleStrategy::park());
    let mut children = Vec::new();
    let mut txs = Vec::new();
    let mut rxs = Vec::new();
    for k in 0..3 {
        let (child, tx, rx) =
            sp::spawn::<u64, u64>(&mut child_command("pong", &k.to_string()), &parked)
                .map_err(|e| format!("spawn: {e}"))?;
        children.push(child);
        txs.push(tx);
        rxs.push(rx);
    }
    let mut sel = Select::new().idle(0, 0);
    let indexes: Vec<usize> = rxs.iter_mut().map(|rx| sel.recv(rx)).collect();
    for round in 0..rounds {
        // One child per round, so that the others are parked and only one wake-up can end the
        // wait; every few rounds all three at once.
        let ks: Vec<usize> = if round % 7 == 0 {
            vec![0, 1, 2]
        } else {
            vec![(round % 3) as usize]
        };
        for &k in &ks {
            txs[k].send(&round).map_err(|e| format!("send: {e}"))?;
        }
        for _ in 0..ks.len() {
            let started = std::time::Instant::now();
            let i = sel
                .ready_timeout(READY_LIMIT)
                .map_err(|e| format!("round {round}: {e} (a lost wake-up?)"))?;
            if started.elapsed() >= STALL {
                return Err(format!(
                    "round {round}: ready took {:?}: a lost wake-up",
                    started.elapsed()
                ));
            }
            let k = indexes
                .iter()
                .position(|&x| x == i)
                .ok_or("unknown index")?;
            let got = sel
                .receiver::<u64>(i)
                .ok_or("receiver")?
                .try_recv()
                .map_err(|e| e.to_string())?;
            if got != round * 2 + k as u64 || !ks.contains(&k) {
                return Err(format!("round {round}: child {k} answered {got}"));
            }
        }
    }
    drop(sel);
    drop(txs);
    drop(rxs);
    for child in children {
        reap(child)?;
    }
    Ok(())
}

/// The child of `park_wake_stress`: answers `x` with `2x + k`, `k` its index among the children.
pub(crate) fn pong_child(k: u64) -> TestResult {
    let parked = Config::new()
        .capacity(64 << 10)
        .idle(sp::IdleStrategy::park());
    let (mut tx, mut rx) = sp::adopt::<u64, u64>(&parked).map_err(|e| e.to_string())?;
    loop {
        match rx.recv() {
            Ok(x) => tx.send(&(2 * x + k)).map_err(|e| e.to_string())?,
            Err(Error::PeerGone) => return Ok(()),
            Err(err) => return Err(err.to_string()),
        }
    }
}
