//! One file per subcommand: each calls the library and adds context.

pub mod enroll;
pub mod exec;
pub mod init;
pub mod learn;
pub mod read;
pub mod serve;

/// An error that carries its own exit code (2: bad configuration).
#[derive(Debug)]
pub struct Exit(pub i32);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for Exit {}
