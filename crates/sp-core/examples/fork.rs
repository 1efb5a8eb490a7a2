//! The seed's forking example with a real child process: the child writes a line to its parent.
//!
//! `cargo run -p sp-core --example fork` prints `Parent received: Message from child process`.
//! The example starts itself again as the child (the `child` argument selects that role).

use std::io::{BufRead, BufReader, Write};
use std::process::Command;

use sp_core::SocketKind;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("child") {
        return child();
    }
    let (parent_end, child_end) = sp_core::pair(SocketKind::Stream)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("child");
    // `spawn` consumes `child_end`: the parent's copy of the unused end is closed once the child
    // is running, so the parent sees end of file when the child exits.
    let mut child = sp_core::spawn(&mut cmd, child_end)?;

    let mut message = String::new();
    BufReader::new(&parent_end).read_line(&mut message)?;
    print!("Parent received: {message}");

    let status = child.wait()?;
    if !status.success() {
        return Err(format!("child failed: {status}").into());
    }
    Ok(())
}

/// The child: take the inherited end and write one line to the parent.
fn child() -> Result<(), Box<dyn std::error::Error>> {
    let mut end = sp_core::adopt()?;
    writeln!(end, "Message from child process")?;
    Ok(())
}
