//! Perl's `socketpair` fork example, typed: the child sends its parent a `String`, the parent
//! prints it and waits (`Parent received: Message from child process`, then a check of the exit).
fn main() -> Result<(), sp::Error> {
    if std::env::args().nth(1).as_deref() == Some("child") {
        let (mut tx, _rx) = sp::adopt::<String, ()>(&sp::Config::new())?;
        return tx.send(&"Message from child process".to_string());
    }
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    let (mut child, _tx, mut rx) = sp::spawn::<(), String>(cmd.arg("child"), &sp::Config::new())?;
    println!("Parent received: {}", rx.recv()?);
    let status = child.wait()?;
    assert!(status.success(), "child failed: {status}");
    Ok(())
}
