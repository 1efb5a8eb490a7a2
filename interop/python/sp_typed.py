"""sp typed records for plain-data values, written from docs/protocol.md, "sp typed records":
HELLO, the three ring record kinds with their prefixes, ATTACH messages and blobs. Postcard is
not implemented: this peer speaks plain data of one fixed size in both directions.
"""

import fcntl
import os
import struct

import sp_frames
import sp_shm_peer as shm

# "HELLO (40 bytes, no descriptors)"
HELLO = struct.Struct("<8sIIIIQQ")
HELLO_MAGIC = b"SPTYHELO"
TYPED_VERSION = 1
ENC_CUSTOM, ENC_POSTCARD, ENC_PLAIN = 0, 1, 2
# "Ring records"
KIND_VALUE, KIND_VALUE_FDS, KIND_BLOB = 0x5354_0001, 0x5354_0002, 0x5354_0003
PREFIX = struct.Struct("<QII")  # seq, n_fds, zero
BLOB_RECORD = struct.Struct("<QIIQ")  # seq, n_fds, zero, len
MAX_VALUE_FDS = 63
# "ATTACH (32 bytes, the descriptors)"
ATTACH = struct.Struct("<8sQIIQ")  # magic, seq, n_fds, flags, blob length
ATTACH_MAGIC = b"SPATTACH"
ATTACH_FLAG_BLOB = 1
ATTACH_WAIT = 1.0  # seconds: "at most a bounded time (1 s by default)"


class Violation(Exception):
    """The peer broke the typed protocol (sp's Protocol(..)); the stream cannot go on."""


class DecodeError(Exception):
    """A record that is not a value of this side's type (sp's Decode(..)); the stream goes on."""


def exchange_hello(chan, send_enc, send_size, recv_enc, recv_size):
    """Right after READY: send one HELLO, then receive the peer's and compare encodings."""
    chan.send(HELLO.pack(HELLO_MAGIC, TYPED_VERSION, 0, send_enc, recv_enc, send_size, recv_size))
    payload, fds = chan.recv(timeout=shm.HANDSHAKE_STEP_LIMIT)
    for fd in fds:
        os.close(fd)
    if fds or len(payload) != HELLO.size or payload[:8] != HELLO_MAGIC:
        raise Violation("Hello: not a HELLO")
    _, version, zero, p_send_enc, p_recv_enc, p_send_size, p_recv_size = HELLO.unpack(payload)
    if version != TYPED_VERSION or zero:
        raise Violation(f"Hello: version {version}, word at 12 = {zero}")
    # The peer's "sends" must equal our "receives" and the other way round, unless either
    # encoding is 0 (custom). The document did not say whether the size words take part for
    # postcard (where they are 0); sp compares (encoding, size) as a pair, and so does this.
    for theirs, ours in (((p_send_enc, p_send_size), (recv_enc, recv_size)),
                         ((p_recv_enc, p_recv_size), (send_enc, send_size))):
        if ENC_CUSTOM in (theirs[0], ours[0]):
            continue
        if theirs != ours:
            raise Violation(f"Hello: encodings differ, peer {theirs}, this side {ours}")


class Receiver:
    """Values from the peer's ring, with their ATTACH messages from the control socket."""

    def __init__(self, consumer, chan, value_size):
        self.consumer, self.chan, self.value_size = consumer, chan, value_size
        self.next_seq = 0
        self.kinds = {KIND_VALUE: 0, KIND_VALUE_FDS: 0, KIND_BLOB: 0}

    def recv(self):
        """(kind, value bytes, descriptors) of the next value; PeerGone at the end."""
        kind, payload = self.consumer.read()
        if kind == KIND_VALUE:
            value, fds = payload, []
        elif kind == KIND_VALUE_FDS:
            if len(payload) < PREFIX.size:
                raise Violation("BadPrefix: VALUE_FDS shorter than its prefix")
            seq, n_fds, zero = PREFIX.unpack_from(payload)
            if zero or not 1 <= n_fds <= MAX_VALUE_FDS:
                raise Violation(f"BadPrefix: n_fds {n_fds}, zero word {zero}")
            fds = self._attachment(seq, n_fds, blob_len=None)
            value = payload[PREFIX.size:]
        elif kind == KIND_BLOB:
            if len(payload) != BLOB_RECORD.size:
                raise Violation("BadPrefix: BLOB record not 24 bytes")
            seq, n_fds, zero, length = BLOB_RECORD.unpack(payload)
            if zero or n_fds > MAX_VALUE_FDS:
                raise Violation(f"BadPrefix: n_fds {n_fds}, zero word {zero}")
            blob_and_fds = self._attachment(seq, n_fds, blob_len=length)
            try:
                value = shm.check_blob_fd(blob_and_fds[0], length)
            except shm.Refused as e:
                for fd in blob_and_fds:
                    os.close(fd)
                raise Violation(f"BadBlob: {e}") from e
            os.close(blob_and_fds[0])
            fds = blob_and_fds[1:]
        else:
            raise Violation(f"UnknownKind {kind:#x}")
        self.kinds[kind] += 1
        if len(value) != self.value_size:
            for fd in fds:
                os.close(fd)
            raise DecodeError(f"Size: {len(value)} bytes, expected {self.value_size}")
        return kind, value, fds

    def _attachment(self, seq, n_fds, blob_len):
        """Steps 1-3 of "Order": the record's seq, then one ATTACH within the bound."""
        if seq != self.next_seq:
            raise Violation(f"Sequence: record {seq}, expected {self.next_seq}")
        try:
            payload, fds = self.chan.recv(timeout=ATTACH_WAIT)
        except (TimeoutError, sp_frames.PeerGone) as e:
            raise Violation("MissingAttachment") from e
        except sp_frames.FrameError as e:
            raise Violation(f"BadAttachment: {e}") from e
        blob = blob_len is not None
        try:
            if len(payload) != ATTACH.size or payload[:8] != ATTACH_MAGIC:
                raise Violation("BadAttachment: not an ATTACH")
            _, a_seq, a_n_fds, flags, a_len = ATTACH.unpack(payload)
            if flags & ~ATTACH_FLAG_BLOB or (not flags & ATTACH_FLAG_BLOB and a_len):
                raise Violation(f"BadAttachment: flags {flags:#x}, length {a_len}")
            if len(fds) != a_n_fds + (flags & ATTACH_FLAG_BLOB):
                raise Violation("BadAttachment: descriptor count differs from the ATTACH")
            if a_seq != seq:
                raise Violation(f"Sequence: ATTACH {a_seq}, record {seq}")
            if (a_n_fds != n_fds or bool(flags & ATTACH_FLAG_BLOB) != blob
                    or (blob and a_len != blob_len)):
                raise Violation("AttachmentMismatch")
        except Violation:
            for fd in fds:
                os.close(fd)
            raise
        self.next_seq += 1
        return fds


class Sender:
    """Values into this side's ring; descriptors and blobs in ATTACH messages sent first."""

    def __init__(self, producer, chan):
        self.producer, self.chan = producer, chan
        self.next_seq = 0

    def send(self, value, fds=(), as_blob=False):
        fds = list(fds)
        if len(fds) > MAX_VALUE_FDS:
            raise ValueError("more than 63 descriptors")
        if not as_blob and not fds:
            self.producer.send(value, KIND_VALUE)
            return
        seq = self.next_seq
        self.next_seq += 1
        if as_blob:
            blob_fd = self._sealed_blob(value)
            try:
                attach = ATTACH.pack(ATTACH_MAGIC, seq, len(fds), ATTACH_FLAG_BLOB, len(value))
                self.chan.send(attach, [blob_fd] + fds)
            finally:
                os.close(blob_fd)
            self.producer.send(BLOB_RECORD.pack(seq, len(fds), 0, len(value)), KIND_BLOB)
        else:
            self.chan.send(ATTACH.pack(ATTACH_MAGIC, seq, len(fds), 0, 0), fds)
            self.producer.send(PREFIX.pack(seq, len(fds), 0) + value, KIND_VALUE_FDS)

    @staticmethod
    def _sealed_blob(value):
        fd = os.memfd_create("sp-interop-value", shm.MFD_CLOEXEC | shm.MFD_ALLOW_SEALING)
        view = memoryview(value)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, shm.BLOB_SEALS)
        return fd
