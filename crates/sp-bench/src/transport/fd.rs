//! The kernel byte transports: pipes, a stream socketpair, and seqpacket socketpairs.

use std::os::fd::{AsFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};
use rustix::pipe::PipeFlags;
use sp_core::{End, SocketKind};

use crate::error::{Error, Result};
use crate::transport::{Check, Fill, Link, Offer, take_fds};

/// The kernel refuses a seqpacket record longer than `SO_SNDBUF` minus this (`unix_dgram_sendmsg`).
const SEQPACKET_OVERHEAD: usize = 32;

/// Reads and writes whole messages on a byte stream (a pipe pair or a stream socket).
#[derive(Debug)]
struct StreamLink {
    rd: OwnedFd,
    wr: OwnedFd,
    buf: PageBuf,
}

/// Sends each message as one or more seqpacket records of at most `max_record` bytes.
#[derive(Debug)]
struct SeqpacketLink {
    fd: OwnedFd,
    buf: PageBuf,
    max_record: usize,
}

/// A message buffer that starts on a page boundary. The kernel copies what it holds for a reader
/// (a record's data, pipe pages) from a page boundary with `rep movsb`, which some CPUs run many
/// times slower when the destination lies 1 to 31 bytes past the source modulo a page, and a
/// large `Vec` starts 16 bytes past a page (glibc's allocation header): so that these baselines
/// run at the kernel's best, not at that quirk's worst, they read into a page-aligned buffer.
#[derive(Debug)]
struct PageBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl PageBuf {
    const PAGE: usize = 4096;

    fn new(len: usize) -> Self {
        let mem = vec![0u8; len + Self::PAGE];
        let start = mem.as_ptr().align_offset(Self::PAGE);
        Self { mem, start, len }
    }

    fn get(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }
}

/// Two pipes: the driver writes on the first and reads on the second.
pub(super) fn offer_pipe(size: usize) -> Result<Offer> {
    let (down_rd, down_wr) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    let (up_rd, up_wr) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC)?;
    Ok(Offer {
        extra: String::new(),
        fds: vec![down_rd, up_wr],
        finish: Box::new(move || Ok(Box::new(StreamLink::new(up_rd, down_wr, size)) as _)),
    })
}

/// One stream socketpair.
pub(super) fn offer_stream(size: usize) -> Result<Offer> {
    let (mine, theirs) = sp_core::pair(SocketKind::Stream)?;
    let mine = OwnedFd::from(mine);
    Ok(Offer {
        extra: String::new(),
        fds: vec![theirs.into()],
        finish: Box::new(move || {
            let wr = mine.try_clone()?;
            Ok(Box::new(StreamLink::new(mine, wr, size)) as _)
        }),
    })
}

/// Child side of a pipe pair (read end, write end) or a stream socket (one descriptor).
pub(super) fn accept_stream(size: usize, fds: Vec<OwnedFd>) -> Result<Box<dyn Link>> {
    let (rd, wr) = if fds.len() == 1 {
        let [fd] = take_fds(fds)?;
        let wr = fd.try_clone()?;
        (fd, wr)
    } else {
        let [rd, wr] = take_fds(fds)?;
        (rd, wr)
    };
    Ok(Box::new(StreamLink::new(rd, wr, size)))
}

/// One seqpacket socketpair, with both ends' buffers set to `buffer` bytes if given.
pub(super) fn offer_seqpacket(size: usize, buffer: Option<usize>) -> Result<Offer> {
    let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    if let Some(n_bytes) = buffer {
        for end in [&mine, &theirs] {
            end.set_send_buffer_size(n_bytes)?;
            end.set_recv_buffer_size(n_bytes)?;
        }
    }
    let mine = OwnedFd::from(mine);
    Ok(Offer {
        extra: String::new(),
        fds: vec![theirs.into()],
        finish: Box::new(move || Ok(Box::new(SeqpacketLink::new(mine, size)?) as _)),
    })
}

/// Child side of a seqpacket pair.
pub(super) fn accept_seqpacket(size: usize, fds: Vec<OwnedFd>) -> Result<Box<dyn Link>> {
    let [fd] = take_fds(fds)?;
    Ok(Box::new(SeqpacketLink::new(fd, size)?))
}

impl StreamLink {
    fn new(rd: OwnedFd, wr: OwnedFd, size: usize) -> Self {
        Self {
            rd,
            wr,
            buf: PageBuf::new(size),
        }
    }
}

impl Link for StreamLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        fill(self.buf.get_mut());
        write_all(&self.wr, self.buf.get())
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let mut got = 0;
        let buf = self.buf.get_mut();
        while got < buf.len() {
            match rustix::io::read(&self.rd, &mut buf[got..]) {
                Ok(0) => return Err(Error::Core(sp_core::Error::PeerGone)),
                Ok(n) => got += n,
                Err(Errno::INTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
        check(self.buf.get())
    }
}

impl SeqpacketLink {
    fn new(fd: OwnedFd, size: usize) -> Result<Self> {
        let end = End::from(fd);
        let sndbuf = end.send_buffer_size()?;
        // Records of whole pages, as large as the send buffer allows.
        let max_record = (sndbuf.saturating_sub(SEQPACKET_OVERHEAD) & !4095).max(4096);
        Ok(Self {
            fd: end.into(),
            buf: PageBuf::new(size),
            max_record,
        })
    }
}

impl Link for SeqpacketLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        fill(self.buf.get_mut());
        for record in self.buf.get().chunks(self.max_record) {
            loop {
                match rustix::net::send(&self.fd, record, SendFlags::NOSIGNAL) {
                    Ok(_) => break,
                    Err(Errno::INTR) => {}
                    Err(Errno::PIPE | Errno::CONNRESET) => {
                        return Err(Error::Core(sp_core::Error::PeerGone));
                    }
                    Err(err) => return Err(err.into()),
                }
            }
        }
        Ok(())
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let mut got = 0;
        let buf = self.buf.get_mut();
        while got < buf.len() {
            match rustix::net::recv(&self.fd, &mut buf[got..], RecvFlags::empty()) {
                Ok((0, _)) => return Err(Error::Core(sp_core::Error::PeerGone)),
                Ok((n, _)) => got += n,
                Err(Errno::INTR) => {}
                Err(err) => return Err(err.into()),
            }
        }
        check(self.buf.get())
    }
}

fn write_all(fd: impl AsFd, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        match rustix::io::write(&fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::INTR) => {}
            Err(Errno::PIPE | Errno::CONNRESET) => {
                return Err(Error::Core(sp_core::Error::PeerGone));
            }
            Err(err) => return Err(err.into()),
        }
    }
    Ok(())
}
