//! One module per subcommand.

pub mod demo;
pub mod init;
pub mod inspect;
pub mod optimize;
pub mod run;
