//! The loop program (tests/fixtures/loop.c): a probed function called in a
//! tight loop, or paced, on command. The per-call benchmark's target and
//! the argument-capture test's fixture.
use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

/// The probed function: `long f(long x, long y, long z)` returning x+y+z+1;
/// the loop calls it as `acc = f(acc, i, 2)`.
pub const FUNCTION: &str = "flowdar_bench_probed";

const SOURCE: &str = include_str!("../fixtures/loop.c");

/// The compiled loop program (`-O2`: its function's first instruction is
/// an `add`, which uprobes single-step).
pub type Target = crate::Fixture;

pub fn build() -> Target {
    crate::compile_fixture(SOURCE, "bench-loop", &["-O2"])
}

/// A started loop program, waiting for "go".
pub struct Running {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Running {
    pub fn start(target: &Path, calls: u64) -> Self {
        let mut child = Command::new(target)
            .arg(calls.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the loop program");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        Self {
            child,
            stdin,
            stdout,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs the loop; returns its duration in ns.
    pub fn go(mut self) -> u64 {
        self.stdin.write_all(b"go\n").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let _ = self.child.wait();
        line.split(' ').next().unwrap().parse().expect("loop time")
    }

    /// Starts calling once per 50 µs until dropped.
    pub fn pace(&mut self) {
        self.stdin.write_all(b"p\n").unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
