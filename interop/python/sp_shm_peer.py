"""The sp-shm duplex, written from docs/protocol.md only: "Memory files", "Control block",
"Records", "Validation", "Handshake", "Wake-ups and liveness" and "Blobs".

This peer has no atomics and no fences: it is a "peer without atomics or fences" in the sense of
"Wake-ups and liveness". It follows that section's rules:
- every header word, `head` and flag is read or written with one aligned 8-byte load or store.
  ctypes.c_uint64 does that: CPython 3.11's Q_get / Q_set compile to one `mov` of 8 bytes on
  x86-64 (checked with objdump on the build this was written on);
- it registers with membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) before the handshake,
  so that an sp parker's membarrier orders this process's publications;
- when it parks it calls membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) between storing its flag
  and re-checking;
- payload bytes are plain copies, in program order before the header store (producer) or after
  the header load (consumer): enough on x86-64 (TSO). On a weaker CPU this peer refuses to run.
"""

import ctypes
import errno
import fcntl
import os
import platform
import select
import socket
import stat
import struct

import sp_frames

# ---- the operating system, through ctypes ------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.syscall.restype = ctypes.c_long

PROT_READ, PROT_WRITE = 1, 2
MAP_SHARED, MAP_POPULATE = 0x01, 0x8000
MAP_FAILED = ctypes.c_void_p(-1).value
MFD_CLOEXEC, MFD_ALLOW_SEALING = 0x1, 0x2
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 0x1, 0x2, 0x4, 0x8
F_SEAL_FUTURE_WRITE = 0x10  # not in Python's fcntl module
SYS_MEMBARRIER = {"x86_64": 324, "aarch64": 283}
MEMBARRIER_CMD_GLOBAL_EXPEDITED = 1 << 1
MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED = 1 << 2


def _mmap(fd, length, prot):
    addr = _libc.mmap(None, length, prot, MAP_SHARED | MAP_POPULATE, fd, 0)
    if addr in (None, MAP_FAILED):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return addr


def _membarrier(cmd):
    res = _libc.syscall(SYS_MEMBARRIER[platform.machine()], cmd, 0, 0)
    if res < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"membarrier({cmd}): {os.strerror(e)}")


def register_membarrier():
    """"Peers without atomics or fences": register before the handshake. This peer cannot take
    part at all without it (the document gives no other way to order its publications), and it
    relies on x86-64's TSO for payload order (AArch64 would need real Acquire/Release)."""
    if platform.machine() != "x86_64":
        raise OSError(errno.ENOTSUP, "this peer needs x86-64 (TSO) for its payload order")
    _membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)


def load64(addr):
    return ctypes.c_uint64.from_address(addr).value


def store64(addr, value):
    ctypes.c_uint64.from_address(addr).value = value


# ---- constants of the document -----------------------------------------------------------

VERSION = 2
LAYOUT = 0x00010080
CONTROL_LEN = 4096
CTL_MAGIC = int.from_bytes(b"SPSHMCTL", "little")  # 0x4C54434D48535053
# "Control block": offsets of the words.
OFF_MAGIC, OFF_VERSION_LAYOUT, OFF_CAPACITY, OFF_MAX_PAYLOAD = 0, 8, 16, 24
OFF_HEAD, OFF_CONSUMER_WAITING, OFF_PRODUCER_WAITING = 256, 384, 512
# "Records".
COMMITTED = 0x8000_0000
KIND_PADDING = 0xFFFF_FFFF
# "Handshake".
OFFER = struct.Struct("<8sIIQQQ")  # magic, version, layout, capacity, max_payload, control size
OFFER_MAGIC = b"SPSHMOFR"
READY = struct.Struct("<8sII")  # magic, status, zero
READY_MAGIC = b"SPSHMRDY"
HANDSHAKE_STEP_LIMIT = 10.0  # seconds, "Each step has a time limit (10 s by default)"
# Refusal codes.
(R_MAGIC, R_VERSION, R_LAYOUT, R_CAPACITY, R_MAX_PAYLOAD, R_FD_COUNT, R_NOT_FILE, R_SEALS,
 R_SIZE, R_HEADER, R_WAKE) = range(1, 12)
R_LOCAL = 0xFFFF
CONTROL_SEALS = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL
DATA_SEALS = CONTROL_SEALS | F_SEAL_FUTURE_WRITE
# "Blobs".
BLOB = struct.Struct("<8sQ")
BLOB_MAGIC = b"SPSHMBLB"
BLOB_SEALS = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL
# "Wake-ups and liveness": a spinning side checks for hang-up every 1024 idle steps.
HANGUP_CHECK_EVERY = 1024


class PeerGone(Exception):
    """The peer's process has gone (hang-up on the wake socket), after everything was read."""


class Corrupt(Exception):
    """A value read from shared memory broke a rule of "Validation"."""


class Refused(Exception):
    """The handshake failed: this side refused the peer's offer (`side` "refused"), or the peer
    refused ours (`side` "rejected"); `code` is the READY status."""

    def __init__(self, message, side="refused", code=R_LOCAL):
        super().__init__(message)
        self.side, self.code = side, code


# ---- wake sockets ------------------------------------------------------------------------


class Waker:
    """One side's end of a ring's wake socketpair ("Wake-ups and liveness")."""

    def __init__(self, sock):
        self.sock = sock
        self.gone = False
        self.tokens_sent = 0

    def send_token(self):
        try:
            self.sock.send(b"\x01", socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            self.tokens_sent += 1
        except BlockingIOError:
            pass  # EAGAIN: the peer already has tokens pending
        except (BrokenPipeError, ConnectionResetError):
            self.gone = True

    def drain(self):
        """Drain every pending token, non-blocking; a zero-length recv is a hang-up."""
        while True:
            try:
                if not self.sock.recv(64, socket.MSG_DONTWAIT):
                    self.gone = True
                    return
            except BlockingIOError:
                return
            except ConnectionResetError:
                self.gone = True
                return

    def poll(self, timeout_ms):
        """poll(POLLIN) for at most timeout_ms (None: no limit); notes POLLHUP/POLLERR."""
        p = select.poll()
        p.register(self.sock.fileno(), select.POLLIN)
        for _, ev in p.poll(timeout_ms):
            if ev & (select.POLLHUP | select.POLLERR):
                self.gone = True

    def check_hangup(self):
        self.poll(0)
        return self.gone


def wake_up_check(flag_addr, waker):
    """"The wake-up check", made by the side that publishes. No fence: this process is registered
    for membarrier, so an sp parker's membarrier orders the preceding stores against this load.
    Without an atomic swap, a load and a store of 0 stand in for swap(0); the worst a race can do
    is send a second token, which the parker drains."""
    if load64(flag_addr) != 0:
        store64(flag_addr, 0)
        waker.send_token()


# ---- the ring ----------------------------------------------------------------------------


class Producer:
    """Writes records into this side's own ring ("Records", "Producer", "The next-slot rule")."""

    def __init__(self, ctl, data, capacity, max_payload, waker, spins):
        self.ctl, self.data = ctl, data
        self.capacity, self.mask, self.max_payload = capacity, capacity - 1, max_payload
        self.waker, self.spins = waker, spins
        self.tail = 0  # private, never stored in shared memory
        self.head_cache = 0  # the last head loaded (and validated)
        self.parks = 0
        self.records = 0

    def _load_head(self):
        """"Validation", producer: never backwards, never past the tail, 8-aligned."""
        h = load64(self.ctl + OFF_HEAD)
        if h < self.head_cache or h > self.tail or h % 8:
            raise Corrupt(f"head {h} (previous {self.head_cache}, tail {self.tail})")
        self.head_cache = h

    def _placement(self, n):
        size = (8 + n + 7) & ~7
        o = self.tail & self.mask
        to_end = self.capacity - o
        pad = to_end if size > to_end else 0
        return size, o, pad

    def _has_room(self, n, reload):
        size, _, pad = self._placement(n)
        need = pad + size + 8  # 8: the next header slot
        if self.capacity - (self.tail - self.head_cache) >= need:
            return True
        if reload:
            self._load_head()
            return self.capacity - (self.tail - self.head_cache) >= need
        return False

    def _commit(self, kind, payload):
        n = len(payload)
        size, o, pad = self._placement(n)
        if pad:
            # "Pad, if pad > 0": zero the word at offset 0, then the padding header.
            store64(self.data, 0)
            store64(self.data + o, (pad - 8) | COMMITTED | (KIND_PADDING << 32))
            self.tail += pad
            r = 0
        else:
            r = o
        if n:
            ctypes.memmove(self.data + r + 8, payload, n)
        # "Commit": zero the next slot, then the header word (x86-64: every store is Release).
        store64(self.data + ((r + size) & self.mask), 0)
        store64(self.data + r, n | COMMITTED | (kind << 32))
        self.tail += size
        self.records += 1

    def send(self, payload, kind=0):
        """Waits for room (spin, then park), commits, then makes the wake-up check."""
        if len(payload) > self.max_payload:
            raise ValueError(f"payload {len(payload)} > max_payload {self.max_payload}")
        if kind == KIND_PADDING:
            raise ValueError("kind 0xFFFFFFFF marks padding")
        idle = 0
        while not self._has_room(len(payload), reload=True):
            if self.waker.gone:
                raise PeerGone()  # "a producer reports PeerGone at once"
            idle += 1
            if idle < self.spins:
                if idle % HANGUP_CHECK_EVERY == 0 and self.waker.check_hangup():
                    raise PeerGone()
                continue
            self._park(len(payload))
        self._commit(kind, payload)
        self.flush()

    def flush(self):
        wake_up_check(self.ctl + OFF_CONSUMER_WAITING, self.waker)
        if self.waker.gone:
            raise PeerGone()

    def _park(self, n):
        """"To park", steps 1-6, as a producer waiting for space."""
        self.parks += 1
        flag = self.ctl + OFF_PRODUCER_WAITING
        self.flush()  # 1: the pending wake-up check
        store64(flag, 1)  # 2
        _membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)  # 3, for a peer without fences
        if self._has_room(n, reload=True):  # 4
            store64(flag, 0)
            return
        self.waker.poll(None)  # 5
        store64(flag, 0)  # 6
        self.waker.drain()


class Consumer:
    """Reads records from the peer's ring ("Consumer", "Validation")."""

    def __init__(self, ctl, data, capacity, max_payload, waker, spins):
        self.ctl, self.data = ctl, data
        self.capacity, self.mask, self.max_payload = capacity, capacity - 1, max_payload
        self.waker, self.spins = waker, spins
        self.head = 0  # private; stored into `head`, never read back
        self.published = 0
        self.parks = 0
        self.records = 0

    def publish(self):
        """One store of the head, then the wake-up check. Once the producer is gone the head is
        no longer published ("Validation": the read-ahead bound freezes)."""
        if self.waker.gone or self.published == self.head:
            return
        store64(self.ctl + OFF_HEAD, self.head)
        self.published = self.head
        wake_up_check(self.ctl + OFF_PRODUCER_WAITING, self.waker)

    def try_read(self):
        """(kind, payload) of the next record, or None when the ring is empty; raises Corrupt."""
        for _ in range(2):  # at most two header words: a padding record, then offset 0
            o = self.head & self.mask
            to_end = self.capacity - o
            w = load64(self.data + o)  # once; only the local w is used
            if w == 0:
                return None
            if not w & COMMITTED:
                raise Corrupt(f"header {w:#x} at {o} without the commit bit")
            n = w & 0x7FFF_FFFF
            kind = w >> 32
            if kind == KIND_PADDING:
                if o == 0 or n != to_end - 8:
                    raise Corrupt(f"padding {w:#x} at {o}")
                self._check_read_ahead(to_end, w)
                self.head += to_end
                continue
            size = (8 + n + 7) & ~7
            if n > self.max_payload or size > to_end:
                raise Corrupt(f"record {w:#x} at {o}")
            self._check_read_ahead(size, w)
            payload = ctypes.string_at(self.data + o + 8, n) if n else b""
            if o == 0 and not self.waker.gone:
                self.waker.check_hangup()  # "once per lap"
            self.head += size
            self.records += 1
            return kind, payload
        raise Corrupt("padding after padding")

    def _check_read_ahead(self, size, w):
        if self.head + size > self.published + self.capacity - 8:
            raise Corrupt(f"{w:#x} at head {self.head} ends past the read-ahead bound")

    def read(self):
        """The next record, waiting (spin, then park); PeerGone once the producer is gone and
        every record it stored is delivered."""
        idle = 0
        while True:
            rec = self.try_read()
            if rec is not None:
                self.publish()  # "after every record", the default
                return rec
            if self.waker.gone:
                raise PeerGone()  # it hung up and the ring is empty: everything was delivered
            self.publish()  # "at the latest when the consumer finds the ring empty"
            idle += 1
            if idle < self.spins:
                if idle % HANGUP_CHECK_EVERY == 0:
                    self.waker.check_hangup()
                continue
            self._park()

    def _park(self):
        """"To park", steps 1-6, as a consumer waiting for data."""
        self.parks += 1
        flag = self.ctl + OFF_CONSUMER_WAITING
        self.publish()  # 1
        store64(flag, 1)  # 2
        _membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)  # 3
        if load64(self.data + (self.head & self.mask)) != 0:  # 4
            store64(flag, 0)
            return
        self.waker.poll(None)  # 5
        store64(flag, 0)  # 6
        self.waker.drain()


# ---- "Memory files" and "Handshake" ------------------------------------------------------


def _create_own_ring(capacity, max_payload):
    """The memfds and the wake socketpair of the ring this side produces into."""
    ctl_fd = os.memfd_create("sp-interop-ctl", MFD_CLOEXEC | MFD_ALLOW_SEALING)
    data_fd = os.memfd_create("sp-interop-data", MFD_CLOEXEC | MFD_ALLOW_SEALING)
    os.ftruncate(ctl_fd, CONTROL_LEN)
    os.ftruncate(data_fd, capacity)
    ctl = _mmap(ctl_fd, CONTROL_LEN, PROT_READ | PROT_WRITE)
    # The producer maps the data read-write *before* it adds F_SEAL_FUTURE_WRITE.
    data = _mmap(data_fd, capacity, PROT_READ | PROT_WRITE)
    store64(ctl + OFF_MAGIC, CTL_MAGIC)
    store64(ctl + OFF_VERSION_LAYOUT, VERSION | (LAYOUT << 32))
    store64(ctl + OFF_CAPACITY, capacity)
    store64(ctl + OFF_MAX_PAYLOAD, max_payload)
    fcntl.fcntl(ctl_fd, fcntl.F_ADD_SEALS, CONTROL_SEALS)
    fcntl.fcntl(data_fd, fcntl.F_ADD_SEALS, DATA_SEALS)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # CLOEXEC
    return ctl_fd, data_fd, ctl, data, mine, theirs


def _check_offer(payload, fds, accept_capacity_up_to):
    """The checks of "Memory files" and "READY", in the order sp makes them; returns
    (code, geometry). Code 0 accepts.

    The document named the order of the memfd checks but not where the OFFER's own fields and
    the descriptor count come, nor whether the memfd checks run file by file; this order was
    confirmed in sp-shm's source (see the interop report) and is now written in the document.
    """
    if len(payload) != OFFER.size or payload[:8] != OFFER_MAGIC:
        return R_MAGIC, None
    _, version, layout, capacity, max_payload, ctl_len = OFFER.unpack(payload)
    if version != VERSION:
        return R_VERSION, None
    if layout != LAYOUT or ctl_len != CONTROL_LEN:
        return R_LAYOUT, None
    if len(fds) != 3:
        return R_FD_COUNT, None
    if capacity & (capacity - 1) or not 4096 <= capacity <= 1 << 32:
        return R_CAPACITY, None
    if max_payload % 8 or not 8 <= max_payload <= capacity // 4:
        return R_MAX_PAYLOAD, None
    if capacity > accept_capacity_up_to:
        return R_CAPACITY, None
    ctl_fd, data_fd, wake_fd = fds
    # File by file, control first: type, seals, size.
    for fd, seals, size in ((ctl_fd, CONTROL_SEALS, CONTROL_LEN), (data_fd, DATA_SEALS, capacity)):
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return R_NOT_FILE, None
        try:
            have = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
        except OSError:
            return R_SEALS, None
        if have & seals != seals:
            return R_SEALS, None
        if st.st_size != size:
            return R_SIZE, None
    if not stat.S_ISSOCK(os.fstat(wake_fd).st_mode):
        return R_WAKE, None
    probe = socket.socket(fileno=os.dup(wake_fd))
    try:
        if probe.family != socket.AF_UNIX or probe.type != socket.SOCK_SEQPACKET:
            return R_WAKE, None
    finally:
        probe.close()
    # Code 10: the first four words of the control block against the offer, each read once.
    # The document said this came before any mapping; sp maps the control block first and
    # loads the words from the mapping. pread(2) reads the same bytes (size and seals are
    # already checked, so the file is exactly 4096 bytes and cannot shrink).
    words = struct.unpack("<4Q", os.pread(ctl_fd, 32, 0))
    if words != (CTL_MAGIC, VERSION | (LAYOUT << 32), capacity, max_payload):
        return R_HEADER, None
    return 0, (capacity, max_payload)


def handshake(chan, capacity, max_payload, spins, accept_capacity_up_to=256 << 20):
    """"Handshake": send one OFFER, receive one, send READY, receive READY.
    Returns (producer, consumer) for the ring this side produces into and the peer's."""
    ctl_fd, data_fd, ctl, data, mine, theirs = _create_own_ring(capacity, max_payload)
    offer = OFFER.pack(OFFER_MAGIC, VERSION, LAYOUT, capacity, max_payload, CONTROL_LEN)
    chan.send(offer, [ctl_fd, data_fd, theirs.fileno()])
    # The creator closes its copy of the peer's wake end as soon as the offer is sent; the
    # memfds stay mapped, so their descriptors are no longer needed either.
    theirs.close()
    os.close(ctl_fd)
    os.close(data_fd)
    producer = Producer(ctl, data, capacity, max_payload, Waker(mine), spins)

    try:
        payload, fds = chan.recv(timeout=HANDSHAKE_STEP_LIMIT)
    except (sp_frames.FrameError, TimeoutError) as e:
        # "An OFFER that cannot be received whole is refused the same way".
        wrong_fds = getattr(e, "name", "") in ("FdCountMismatch", "FdsTruncated")
        code = R_FD_COUNT if wrong_fds else R_LOCAL
        _send_ready_best_effort(chan, code)
        raise Refused(f"the peer's OFFER could not be received: {e}", code=code) from e
    code, geometry = _check_offer(payload, fds, accept_capacity_up_to)
    if code:
        for fd in fds:
            os.close(fd)
        _send_ready_best_effort(chan, code)
        raise Refused(f"refused the peer's OFFER with code {code}", code=code)
    peer_capacity, peer_max_payload = geometry
    peer_ctl_fd, peer_data_fd, peer_wake_fd = fds
    peer_ctl = _mmap(peer_ctl_fd, CONTROL_LEN, PROT_READ | PROT_WRITE)
    peer_data = _mmap(peer_data_fd, peer_capacity, PROT_READ)  # the consumer maps it read-only
    os.close(peer_ctl_fd)
    os.close(peer_data_fd)
    consumer = Consumer(peer_ctl, peer_data, peer_capacity, peer_max_payload,
                        Waker(socket.socket(fileno=peer_wake_fd)), spins)
    # Not in the document: a peer that refused our OFFER sends its READY and closes at once,
    # so our own READY can fail with EPIPE. Its refusal is still queued: read it.
    sent = _send_ready_best_effort(chan, 0)

    payload, fds = chan.recv(timeout=HANDSHAKE_STEP_LIMIT)
    if fds:
        for fd in fds:
            os.close(fd)
        raise Refused("READY with descriptors")
    if len(payload) != READY.size or payload[:8] != READY_MAGIC:
        raise Refused(f"not a READY: {payload!r}")
    # The word at offset 12 is "zero"; the document does not say that a receiver checks it,
    # and sp does not, so neither does this peer.
    _, status, _ = READY.unpack(payload)
    if status:
        raise Refused(f"the peer refused our OFFER with code {status:#x}", "rejected", status)
    if not sent:
        raise PeerGone()  # it accepted, then went away before our READY arrived
    return producer, consumer


def _send_ready_best_effort(chan, status):
    """Sends READY; False if the peer is gone already (it may have refused and closed)."""
    try:
        chan.send(READY.pack(READY_MAGIC, status, 0))
        return True
    except sp_frames.PeerGone:
        return False


# ---- "Blobs" -----------------------------------------------------------------------------


def send_blob(chan, content):
    """A sealed memfd filled with write(2), so no writable mapping ever exists, then sealed
    WRITE | SHRINK | GROW | SEAL and sent in a BLOB message."""
    fd = os.memfd_create("sp-interop-blob", MFD_CLOEXEC | MFD_ALLOW_SEALING)
    try:
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, BLOB_SEALS)
        chan.send(BLOB.pack(BLOB_MAGIC, len(content)), [fd])
    finally:
        os.close(fd)


def check_blob_fd(fd, length):
    """The receiver's checks of a blob memfd; returns its bytes (read with pread: the seals make
    them immutable). Raises Refused with the handshake's codes 7, 8, 9."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"blob code {R_NOT_FILE}", code=R_NOT_FILE)
    try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        raise Refused(f"blob code {R_SEALS}", code=R_SEALS) from None
    if seals & BLOB_SEALS != BLOB_SEALS:
        raise Refused(f"blob code {R_SEALS}", code=R_SEALS)
    if st.st_size != length:
        raise Refused(f"blob code {R_SIZE}", code=R_SIZE)
    out = bytearray()
    while len(out) < length:
        chunk = os.pread(fd, length - len(out), len(out))
        if not chunk:
            raise Refused("blob shorter than its size")
        out += chunk
    return bytes(out)


def recv_blob(chan, timeout=None):
    payload, fds = chan.recv(timeout=timeout)
    try:
        if len(payload) != BLOB.size or payload[:8] != BLOB_MAGIC or len(fds) != 1:
            raise Refused(f"not a BLOB message: {len(payload)} bytes, {len(fds)} descriptors")
        _, length = BLOB.unpack(payload)
        return check_blob_fd(fds[0], length)
    finally:
        for fd in fds:
            os.close(fd)
