//! Hands an open file to a child process over a seqpacket channel (`SCM_RIGHTS`); the child reads
//! the file through the received descriptor and reports what it read.
//!
//! `cargo run -p sp-core --example pass_fd` prints what the child read. The file is unlinked as soon
//! as it is open, so nothing is left behind; only the descriptor carries it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use sp_core::{Channel, SocketKind};

const CONTENTS: &str = "The quick brown fox jumps over the lazy dog.";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("child") {
        return child();
    }
    let path = std::env::temp_dir().join(format!("sp-pass-fd-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    file.write_all(CONTENTS.as_bytes())?;
    file.seek(SeekFrom::Start(0))?;

    let (parent_end, child_end) = sp_core::pair(SocketKind::SeqPacket)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("child");
    let mut child = sp_core::spawn(&mut cmd, child_end)?;

    let mut channel = Channel::new(parent_end)?;
    channel.send(b"read this file", &[file.as_fd()])?;
    println!(
        "Parent sent an open file (fd {}) to child {}",
        std::os::fd::AsRawFd::as_raw_fd(&file),
        child.id()
    );

    let reply = channel.recv_timeout(Duration::from_secs(10))?;
    println!("Parent received: {}", String::from_utf8_lossy(&reply.bytes));
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("child failed: {status}").into());
    }
    Ok(())
}

/// The child: receive the descriptor, read the file through it, reply with what it read.
fn child() -> Result<(), Box<dyn std::error::Error>> {
    let mut channel = Channel::new(sp_core::adopt()?)?;
    let mut msg = channel.recv_timeout(Duration::from_secs(10))?;
    let fd = msg.fds.pop().ok_or("no file descriptor arrived")?;
    let mut contents = String::new();
    File::from(fd).read_to_string(&mut contents)?;
    let reply = format!("child read {} bytes: {contents}", contents.len());
    channel.send(reply.as_bytes(), &[])?;
    Ok(())
}
