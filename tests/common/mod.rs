//! Helpers shared by the end-to-end tests that run the `e2enc` binary.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Runs `e2enc ARGS` and waits for it.
pub fn e2enc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_e2enc"))
        .args(args)
        .output()
        .expect("the e2enc binary runs")
}

/// Standard output and standard error, for assertion messages and content checks.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
