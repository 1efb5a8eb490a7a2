//! Re-executed roles: a test binary starts itself as a child with a role's name (and one
//! parameter) in the environment, and [`crate::main`] plays that role instead of running trials.

use std::fmt::Display;
use std::process::{Command, ExitCode};

/// Set in a re-executed child: the name of the role it plays.
pub const ROLE_ENV: &str = "SP_TEST_ROLE";
/// Set in a re-executed child: the role's parameter (an idle strategy, a scenario, a count);
/// empty when the role takes none.
pub const ROLE_ARG_ENV: &str = "SP_TEST_ROLE_ARG";

/// The role this process was started to play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The role's name ([`ROLE_ENV`]).
    pub name: String,
    /// Its parameter ([`ROLE_ARG_ENV`]), empty if none was given.
    pub arg: String,
}

impl Role {
    /// The role of this process, if it was started as one.
    pub fn current() -> Option<Self> {
        let name = std::env::var(ROLE_ENV).ok()?;
        let arg = std::env::var(ROLE_ARG_ENV).unwrap_or_default();
        Some(Self { name, arg })
    }

    /// The exit code for a role that ended with `res`: success, or failure with the reason on
    /// stderr (which the test's own stderr shows).
    pub fn exit(&self, res: Result<(), impl Display>) -> ExitCode {
        match res {
            Ok(()) => ExitCode::SUCCESS,
            Err(why) => {
                eprintln!("child role {} ({:?}) failed: {why}", self.name, self.arg);
                ExitCode::FAILURE
            }
        }
    }
}

/// This test binary as a command that plays role `name` with parameter `arg` when started.
pub fn command(name: &str, arg: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.env(ROLE_ENV, name).env(ROLE_ARG_ENV, arg);
    cmd
}
