//! One module per subcommand.

pub mod bench;
pub mod compile;
pub mod demo;
pub mod evaluate;
pub mod init;
pub mod inspect;
pub mod optimize;
pub mod run;
pub mod segment;
