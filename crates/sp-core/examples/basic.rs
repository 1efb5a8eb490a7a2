//! The seed's basic example: write a line on one end of a stream pair, read it on the other.
//!
//! `cargo run -p sp-core --example basic` prints `sock2 received: Hello from sock1!`.

use std::io::{BufRead, BufReader, Write};

use sp_core::SocketKind;

fn main() -> std::io::Result<()> {
    let (mut sock1, sock2) = sp_core::pair(SocketKind::Stream)?;

    // Send a message from sock1.
    writeln!(sock1, "Hello from sock1!")?;

    // Receive it on sock2, as a line.
    let mut message = String::new();
    BufReader::new(sock2).read_line(&mut message)?;
    print!("sock2 received: {message}");

    // Both ends close when they go out of scope.
    Ok(())
}
