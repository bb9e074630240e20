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

/// Most worker threads a command accepts (`--threads`): far more than any machine e2enc runs on
/// has cores, far fewer than would exhaust the process's thread limit.
pub const MAX_THREADS: usize = 1024;

/// Parses `--threads`: 0 (where allowed: all cores) up to [`MAX_THREADS`].
pub fn parse_threads(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of threads"))?;
    if n > MAX_THREADS {
        return Err(format!(
            "{n} threads is more than the limit of {MAX_THREADS} (this machine has {} cores)",
            default_threads()
        ));
    }
    Ok(n)
}
