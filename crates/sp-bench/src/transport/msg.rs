//! sp-core messages: [`sp_core::Channel`] over a seqpacket pair, as an application would use it.

use std::os::fd::OwnedFd;

use sp_core::{Channel, End, HEADER_LEN, Message, SocketKind};

use crate::error::Result;
use crate::transport::{Check, Fill, Link, Offer, take_fds};

/// Socket buffer size used when a message does not fit the default seqpacket buffer.
const LARGE_BUFFER: usize = 4 << 20;

/// Seqpacket overhead the kernel counts against `SO_SNDBUF` for each record.
const SEQPACKET_OVERHEAD: usize = 32;

#[derive(Debug)]
struct ChannelLink {
    channel: Channel,
    buf: Vec<u8>,
    msg: Message,
}

/// A seqpacket pair wrapped as two channels; buffers are raised only when a message needs it.
pub(super) fn offer(size: usize) -> Result<Offer> {
    let (mine, theirs) = sp_core::pair(SocketKind::SeqPacket)?;
    let default_sndbuf = mine.send_buffer_size()?;
    if size + HEADER_LEN + SEQPACKET_OVERHEAD > default_sndbuf {
        for end in [&mine, &theirs] {
            end.set_send_buffer_size(LARGE_BUFFER)?;
            end.set_recv_buffer_size(LARGE_BUFFER)?;
        }
    }
    let mine = OwnedFd::from(mine);
    Ok(Offer {
        extra: String::new(),
        fds: vec![theirs.into()],
        finish: Box::new(move || Ok(Box::new(ChannelLink::new(mine, size)?) as _)),
    })
}

/// Child side.
pub(super) fn accept(size: usize, fds: Vec<OwnedFd>) -> Result<Box<dyn Link>> {
    let [fd] = take_fds(fds)?;
    Ok(Box::new(ChannelLink::new(fd, size)?))
}

impl ChannelLink {
    fn new(fd: OwnedFd, size: usize) -> Result<Self> {
        let channel = Channel::new(End::from(fd))?.with_max_message_len(size.max(HEADER_LEN));
        Ok(Self {
            channel,
            buf: vec![0; size],
            msg: Message::default(),
        })
    }
}

impl Link for ChannelLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        fill(&mut self.buf);
        Ok(self.channel.send(&self.buf, &[])?)
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        // One `Message` for the whole run: `recv_into` reuses its buffer, as a user's loop would.
        self.channel.recv_into(&mut self.msg)?;
        check(&self.msg.bytes)
    }
}
