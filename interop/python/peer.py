#!/usr/bin/env python3
"""An sp peer in Python 3.11 (standard library only), written from docs/protocol.md alone.

Started as a child by sp_core::spawn, sp_shm::spawn or sp::spawn, it echoes what its parent
sends, in one of three modes:

  frames  sp-core frames: every frame is sent back with the same bytes and descriptors.
  shm     the sp-shm handshake, one blob echoed (bytes reversed), then every ring record echoed
          with its kind into this side's own ring, until the parent's ring hangs up.
  typed   shm's handshake, then sp's HELLO and typed records of plain data of --value-size
          bytes: every value is echoed with the same record kind and descriptors.

At the end it prints one line, "interop-peer mode=... records=N ...", and exits 0. Any error
is a traceback on stderr and exit status 1; a parent that vanished while this side was producing
is exit status 3; a refused handshake (either way) is exit status 4.
"""

import argparse
import os
import sys

import sp_frames
import sp_shm_peer as shm
import sp_typed


def report(mode, **counts):
    fields = " ".join(f"{k}={v}" for k, v in counts.items())
    print(f"interop-peer mode={mode} {fields}", flush=True)


def run_frames(_args):
    chan = sp_frames.adopt()
    kind = "stream" if chan.stream else "seqpacket"
    frames = n_bytes = n_fds = 0
    while True:
        try:
            payload, fds = chan.recv()
        except sp_frames.PeerGone:
            break
        try:
            chan.send(payload, fds)
        finally:
            for fd in fds:
                os.close(fd)
        frames += 1
        n_bytes += len(payload)
        n_fds += len(fds)
    report("frames", socket=kind, records=frames, bytes=n_bytes, fds=n_fds)


def connect(args):
    """Register for membarrier before the handshake, adopt the socket, run the handshake.
    A failed handshake is reported ("handshake=refused|rejected code=N") with exit status 4."""
    shm.register_membarrier()
    chan = sp_frames.adopt()
    try:
        producer, consumer = shm.handshake(chan, args.capacity, args.max_payload, args.spins,
                                           args.accept_capacity_up_to)
    except shm.Refused as e:
        print(f"interop-peer: {e}", file=sys.stderr)
        report(args.mode, handshake=e.side, code=e.code)
        sys.exit(4)
    return chan, producer, consumer


def run_shm(args):
    chan, producer, consumer = connect(args)
    blob = shm.recv_blob(chan, timeout=shm.HANDSHAKE_STEP_LIMIT)
    shm.send_blob(chan, blob[::-1])
    records = n_bytes = 0
    while True:
        try:
            kind, payload = consumer.read()
        except shm.PeerGone:
            break
        try:
            producer.send(payload, kind)
        except shm.PeerGone:
            print("interop-peer: the parent's consumer went away", file=sys.stderr)
            sys.exit(3)
        records += 1
        n_bytes += len(payload)
    report("shm", records=records, bytes=n_bytes, blob=len(blob),
           consumer_parks=consumer.parks, producer_parks=producer.parks,
           tokens_to_producer=consumer.waker.tokens_sent,
           tokens_to_consumer=producer.waker.tokens_sent)


def run_typed(args):
    chan, producer, consumer = connect(args)
    size = args.value_size
    sp_typed.exchange_hello(chan, sp_typed.ENC_PLAIN, size, sp_typed.ENC_PLAIN, size)
    rx = sp_typed.Receiver(consumer, chan, size)
    tx = sp_typed.Sender(producer, chan)
    records = n_fds = 0
    while True:
        try:
            kind, value, fds = rx.recv()
        except shm.PeerGone:
            break
        try:
            tx.send(value, fds, as_blob=kind == sp_typed.KIND_BLOB)
        except shm.PeerGone:
            print("interop-peer: the parent's receiver went away", file=sys.stderr)
            sys.exit(3)
        finally:
            for fd in fds:
                os.close(fd)
        records += 1
        n_fds += len(fds)
    report("typed", records=records, fds=n_fds,
           values=rx.kinds[sp_typed.KIND_VALUE], value_fds=rx.kinds[sp_typed.KIND_VALUE_FDS],
           blobs=rx.kinds[sp_typed.KIND_BLOB], consumer_parks=consumer.parks,
           producer_parks=producer.parks)


def main():
    if sys.version_info < (3, 8):
        sys.exit("interop-peer: needs Python 3.8 or later (os.memfd_create); written for 3.11")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["frames", "shm", "typed"])
    ap.add_argument("--capacity", type=int, default=8192, help="this side's ring, bytes")
    ap.add_argument("--max-payload", type=int, default=1024)
    ap.add_argument("--spins", type=int, default=200,
                    help="idle checks before parking (0: park at once)")
    ap.add_argument("--accept-capacity-up-to", type=int, default=256 << 20,
                    help="the largest ring accepted from the parent, bytes")
    ap.add_argument("--value-size", type=int, default=64, help="typed: plain value size")
    args = ap.parse_args()
    {"frames": run_frames, "shm": run_shm, "typed": run_typed}[args.mode](args)


if __name__ == "__main__":
    main()
