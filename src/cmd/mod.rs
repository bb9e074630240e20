//! One module per subcommand.

pub mod bench;
pub mod check;
pub mod compile;
pub mod demo;
pub mod evaluate;
pub mod init;
pub mod inspect;
pub mod optimize;
pub mod run;
pub mod segment;
pub mod train;

/// Worker threads when the user names none: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
