"""sp-core frames, written from docs/protocol.md, section "sp-core frames" only.

One connected AF_UNIX socket (seqpacket or stream) carries frames both ways: a 16-byte header
(magic 0x5350 as a little-endian u16, version 2, n_fds, n_bytes as a u32, 8 reserved zero bytes)
and n_bytes of
payload, the frame's descriptors in one SCM_RIGHTS control message. This module is a peer, not a
library: any error raises, and the caller ends the process (a stream channel cannot go on after
an error anyway, see "Receiving").
"""

import array
import os
import re
import select
import socket
import struct
import time

# "Header": the fields, their widths and values.
FRAME_MAGIC = 0x5350
FRAME_VERSION = 2
HEADER = struct.Struct("<HBBIQ")  # magic, version, n_fds, n_bytes, reserved
HEADER_LEN = HEADER.size  # 16
MAX_FDS = 64
DEFAULT_MAX_MESSAGE_LEN = 1 << 20  # 1 MiB, "Limits"
# "Receiving": a control buffer of CMSG_SPACE(64 x 4) bytes, which holds exactly 64 descriptors.
CMSG_BUF_LEN = socket.CMSG_SPACE(MAX_FDS * 4)
# "Stream, per frame", check 3: more than 2 x 64 descriptors waiting is UnclaimedFds.
MAX_QUEUED_FDS = 2 * MAX_FDS
# Python's socket module has no POLLRDHUP constant; Linux's value.
POLLRDHUP = 0x2000


class PeerGone(Exception):
    """End of file: the peer closed its end after everything it sent was delivered."""


class FrameError(Exception):
    """A frame the checks of "Receiving" refuse; the message starts with the sp-core error's
    name (`FdCountMismatch { .. }`, `Malformed(..)`), which `name` gives alone."""

    @property
    def name(self):
        return re.match(r"[A-Za-z]*", str(self)).group(0)


def adopt():
    """"The socket": a child started by sp_core::spawn finds its end in SP_CORE_FD, or, when
    the end is handed over after exec, a rendezvous name in SP_CORE_RENDEZVOUS ("Handing the end
    over after exec").

    It checks that the descriptor is an AF_UNIX socket, sets FD_CLOEXEC on it and removes the
    variable from the environment (this process has a single thread here).
    """
    if "SP_CORE_FD" not in os.environ:
        return _adopt_handed_over()
    fd = int(os.environ["SP_CORE_FD"], 10)
    sock = socket.socket(fileno=fd)  # raises ENOTSOCK for anything but a socket
    if sock.family != socket.AF_UNIX:
        raise FrameError(f"SP_CORE_FD={fd} is not an AF_UNIX socket")
    if sock.type not in (socket.SOCK_SEQPACKET, socket.SOCK_STREAM):
        # "A SOCK_DGRAM pair is refused (WrongSocketKind)".
        raise FrameError(f"SP_CORE_FD={fd} is neither seqpacket nor stream")
    os.set_inheritable(fd, False)
    del os.environ["SP_CORE_FD"]
    return Channel(sock)


# "Handing the end over after exec": the payload (magic, version, signal) and the name's shape.
HANDOVER = struct.Struct("<8sIi")
HANDOVER_MAGIC = b"SPHANDOV"
HANDOVER_VERSION = 1
PR_SET_PDEATHSIG = 1


def _peer_pid(sock):
    pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid


def _adopt_handed_over():
    name = os.environ["SP_CORE_RENDEZVOUS"]
    if not re.fullmatch(r"sp-core-[0-9a-f]{32}", name):
        raise FrameError(f"NoInheritedEnd: SP_CORE_RENDEZVOUS={name!r}")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # close-on-exec by default
    try:
        conn.connect(b"\0" + name.encode())  # the abstract namespace
    except (ConnectionRefusedError, FileNotFoundError) as e:
        raise FrameError("Handover(NotParent): nobody listens under the name") from e
    parent = _peer_pid(conn)
    if parent != os.getppid():
        raise FrameError(f"Handover(NotParent): the listener is pid {parent}")
    payload, fds = Channel(conn).recv(timeout=10)
    conn.close()
    if len(payload) != HANDOVER.size or len(fds) != 1:
        _close_all(fds)
        raise FrameError("Handover(BadMessage): wrong length or descriptor count")
    magic, version, signal = HANDOVER.unpack(payload)
    if magic != HANDOVER_MAGIC or version != HANDOVER_VERSION:
        _close_all(fds)
        raise FrameError("Handover(BadMessage): wrong magic or version")
    sock = socket.socket(fileno=fds[0])
    if sock.family != socket.AF_UNIX:
        raise FrameError("NotASocket: the handed-over end is not an AF_UNIX socket")
    if signal != 0:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent:
            raise FrameError("Handover(NotParent): the parent died")
    del os.environ["SP_CORE_RENDEZVOUS"]
    return Channel(sock)


def _close_all(fds):
    for fd in fds:
        os.close(fd)


def _fds_of(ancdata):
    """The descriptors of every SCM_RIGHTS message in ancdata, in order."""
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


class Channel:
    """Frames over one end of a seqpacket or stream pair ("Seqpacket framing", "Stream framing")."""

    def __init__(self, sock, max_len=DEFAULT_MAX_MESSAGE_LEN):
        self.sock = sock
        self.max_len = max_len
        self.stream = sock.type == socket.SOCK_STREAM
        # "Descriptor FIFO rule": bytes buffered and descriptors in arrival order (stream only).
        self.buf = bytearray()
        self.fifo = []

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        _close_all(self.fifo)
        self.fifo = []
        self.sock.close()

    # ---- sending -------------------------------------------------------------------------

    def send(self, payload, fds=()):
        """One frame. Seqpacket: one sendmsg of header and payload with its descriptors.
        Stream: the descriptors go with the frame's first byte; the rest in plain sends."""
        fds = list(fds)
        if len(fds) > MAX_FDS:
            raise FrameError(f"TooManyFds: {len(fds)}")
        if len(payload) > self.max_len:
            raise FrameError(f"TooLarge: {len(payload)} > {self.max_len}")
        frame = HEADER.pack(FRAME_MAGIC, FRAME_VERSION, len(fds), len(payload), 0) + bytes(payload)
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            sent = self.sock.sendmsg([frame], anc, socket.MSG_NOSIGNAL)
            if sent < len(frame):
                # Only a stream socket sends part of a frame; a seqpacket record is atomic.
                self.sock.sendall(frame[sent:], socket.MSG_NOSIGNAL)
        except (BrokenPipeError, ConnectionResetError) as e:
            # "On send, EPIPE and ECONNRESET mean the peer is gone".
            raise PeerGone() from e

    # ---- receiving -----------------------------------------------------------------------

    def recv(self, timeout=None):
        """The next frame as (payload bytes, list of descriptors), each descriptor close-on-exec.

        Raises PeerGone at end of file, TimeoutError when timeout (seconds) passes first, and
        FrameError for a frame "Receiving" refuses (its descriptors closed).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stream:
            return self._recv_stream(deadline)
        return self._recv_seqpacket(deadline)

    def _wait_readable(self, deadline):
        if deadline is None:
            return
        left = deadline - time.monotonic()
        p = select.poll()
        p.register(self.sock.fileno(), select.POLLIN)
        if left <= 0 or not p.poll(left * 1000):
            raise TimeoutError("no frame within the time limit")

    def _recvmsg(self, n_bytes, deadline):
        """recvmsg with MSG_CMSG_CLOEXEC and the 272-byte control buffer; ECONNRESET is
        "read again" (the "ECONNRESET rule")."""
        while True:
            self._wait_readable(deadline)
            try:
                data, anc, flags, _ = self.sock.recvmsg(
                    n_bytes, CMSG_BUF_LEN, socket.MSG_CMSG_CLOEXEC
                )
            except ConnectionResetError:
                continue
            return data, _fds_of(anc), flags

    def _hung_up(self):
        p = select.poll()
        p.register(self.sock.fileno(), select.POLLHUP | POLLRDHUP)
        return any(ev & (select.POLLHUP | POLLRDHUP) for _, ev in p.poll(0))

    def _recv_seqpacket(self, deadline):
        # "Seqpacket, per record". A buffer of exactly 16 + max: a longer record sets MSG_TRUNC.
        data, fds, flags = self._recvmsg(HEADER_LEN + self.max_len, deadline)
        try:
            # 1: an empty result without descriptors is end of file if the peer hung up and no
            # non-empty record is queued after it; otherwise an empty record.
            if not data and not fds:
                if self._hung_up():
                    try:
                        nxt = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                    except (BlockingIOError, ConnectionResetError):
                        nxt = b""
                    if not nxt:
                        raise PeerGone()
                raise FrameError("Malformed(EmptyRecord)")
            declared = data[3] if len(data) >= HEADER_LEN else None
            # 2
            if flags & socket.MSG_CTRUNC:
                raise FrameError(f"FdsTruncated {{ declared: {declared}, received: {len(fds)} }}")
            # 3
            if flags & socket.MSG_TRUNC or len(data) > HEADER_LEN + self.max_len:
                raise FrameError("TooLarge")
            # 4
            if len(data) < HEADER_LEN:
                raise FrameError(f"Malformed(ShortFrame {{ len: {len(data)} }})")
            magic, version, n_fds, n_bytes, reserved = HEADER.unpack_from(data)
            # 5, 6, 7, 8, 9, 10
            if magic != FRAME_MAGIC:
                raise FrameError(f"Malformed(BadMagic {{ found: {magic:#x} }})")
            if version != FRAME_VERSION:
                raise FrameError(f"Malformed(BadVersion {{ found: {version} }})")
            if reserved != 0:
                raise FrameError(f"Malformed(BadReserved {{ found: {reserved:#x} }})")
            if n_fds > MAX_FDS:
                raise FrameError(f"Malformed(TooManyFdsDeclared {{ declared: {n_fds} }})")
            if n_bytes != len(data) - HEADER_LEN:
                raise FrameError("Malformed(LengthMismatch)")
            if len(fds) != n_fds:
                raise FrameError(f"FdCountMismatch {{ declared: {n_fds}, received: {len(fds)} }}")
        except BaseException:
            _close_all(fds)
            raise
        return bytes(data[HEADER_LEN:]), fds

    def _recv_stream(self, deadline):
        # "Stream, per frame": bytes in self.buf, descriptors in self.fifo.
        try:
            while True:
                frame = self._take_stream_frame()
                if frame is not None:
                    return frame
                data, fds, flags = self._recvmsg(1 << 16, deadline)
                self.fifo.extend(fds)
                if flags & socket.MSG_CTRUNC:  # 1
                    raise FrameError("FdsTruncated")
                if not data:  # 2: end of file; a partial frame and its descriptors are dropped
                    raise PeerGone()
                self.buf += data
                if len(self.fifo) > MAX_QUEUED_FDS:  # 3
                    raise FrameError(f"Malformed(UnclaimedFds {{ queued: {len(self.fifo)} }})")
        except FrameError:
            # After any error but end of file the stream cannot be resynchronised: close what
            # is queued (sp-core answers Poisoned from then on; this peer gives up).
            _close_all(self.fifo)
            self.fifo = []
            raise

    def _take_stream_frame(self):
        if len(self.buf) < HEADER_LEN:
            return None
        magic, version, n_fds, n_bytes, reserved = HEADER.unpack_from(self.buf)
        if magic != FRAME_MAGIC:  # 4
            raise FrameError(f"Malformed(BadMagic {{ found: {magic:#x} }})")
        if version != FRAME_VERSION:
            raise FrameError(f"Malformed(BadVersion {{ found: {version} }})")
        if reserved != 0:
            raise FrameError(f"Malformed(BadReserved {{ found: {reserved:#x} }})")
        if n_fds > MAX_FDS:
            raise FrameError(f"Malformed(TooManyFdsDeclared {{ declared: {n_fds} }})")
        if n_bytes > self.max_len:  # 5: at once, without waiting for the payload
            raise FrameError(f"TooLarge {{ len: {n_bytes}, max: {self.max_len} }}")
        end = HEADER_LEN + n_bytes
        if len(self.buf) < end:
            return None
        if len(self.fifo) < n_fds:  # 6
            raise FrameError(f"FdCountMismatch {{ declared: {n_fds}, received: {len(self.fifo)} }}")
        payload = bytes(self.buf[HEADER_LEN:end])
        del self.buf[:end]
        fds, self.fifo = self.fifo[:n_fds], self.fifo[n_fds:]
        if not self.buf and self.fifo:  # 7
            extra = len(self.fifo)
            _close_all(fds)
            raise FrameError(
                f"FdCountMismatch {{ declared: {n_fds}, received: {n_fds + extra} }}"
            )
        return payload, fds
