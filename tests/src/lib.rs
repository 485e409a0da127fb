//! Support for Flowdar's root integration tests: the `flowdar` binary under
//! test, a recorder child process that is waited for and stopped by signal,
//! an independent bpftrace counter, and trace checks.
//!
//! These tests need root, the real kernel and Debian's apache2; run them with
//! `cargo xtask test`, which sets `FLOWDAR_BIN`.
pub mod browser;
pub mod looper;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use flowdar::store::{TraceFooter, TraceHeader, TraceReader};
use flowdar_common::{Event, EventKind};
use rustix::process::{kill_process, Pid, Signal};

/// The `flowdar` binary built by `cargo xtask test`.
pub fn flowdar_bin() -> PathBuf {
    let p = std::env::var_os("FLOWDAR_BIN")
        .map(PathBuf::from)
        .expect("FLOWDAR_BIN is not set: run these tests with `cargo xtask test`");
    assert!(p.exists(), "FLOWDAR_BIN={} does not exist", p.display());
    p
}

/// Panics unless running as root (these tests need the kernel).
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "integration tests need root: run `cargo xtask test` as root"
    );
}

/// Runs `flowdar` with `args` to completion.
pub fn flowdar(args: &[&str]) -> Output {
    Command::new(flowdar_bin())
        .args(args)
        .output()
        .expect("run flowdar")
}

/// `flowdar export TRACE --format otlp --endpoint (the receiver) EXTRA...`.
pub fn export_otlp(
    trace: &str,
    receiver: &flowdar::server::otlp_receiver::Receiver,
    extra: &[&str],
) -> Output {
    let endpoint = receiver.endpoint();
    let mut args = vec!["export", trace, "--format", "otlp", "--endpoint", &endpoint];
    args.extend_from_slice(extra);
    flowdar(&args)
}

/// `flowdar ARGS...` (a `--json` command), which must succeed: its output.
pub fn flowdar_json(args: &[&str]) -> serde_json::Value {
    let out = flowdar(args);
    assert!(
        out.status.success(),
        "flowdar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `flowdar record --pid PID ARGS...` run to completion.
pub fn record_now(pid: u32, args: &[&str]) -> Output {
    let pid = pid.to_string();
    let mut all = vec!["record", "--pid", &pid];
    all.extend_from_slice(args);
    flowdar(&all)
}

/// A JSON file the test needs (a failure names the file).
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}")))
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Runs `cmd` to completion; a failure to start or a non-zero exit fails
/// the test with both outputs.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A background process whose stderr/stdout are collected, started and
/// considered ready once a line containing a marker appears.
pub struct Background {
    child: Option<Child>,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    /// Send the stop signal again every this long until the process exits.
    resend: Option<Duration>,
}

impl Background {
    /// Spawns `cmd` and waits (up to `timeout`) for `ready` in stdout or stderr.
    pub fn start(mut cmd: Command, ready: &str, timeout: Duration) -> Self {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        let (tx, rx) = mpsc::channel();
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let pump = |stream: Box<dyn std::io::Read + Send>,
                    buf: Arc<Mutex<String>>,
                    tx: mpsc::Sender<()>,
                    ready: String| {
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let hit = line.contains(&ready);
                    let mut b = buf.lock().unwrap();
                    b.push_str(&line);
                    b.push('\n');
                    drop(b);
                    if hit {
                        let _ = tx.send(());
                    }
                }
            })
        };
        pump(
            Box::new(child.stdout.take().unwrap()),
            out.clone(),
            tx.clone(),
            ready.to_string(),
        );
        pump(
            Box::new(child.stderr.take().unwrap()),
            err.clone(),
            tx,
            ready.to_string(),
        );
        let bg = Self {
            child: Some(child),
            out,
            err,
            resend: None,
        };
        if rx.recv_timeout(timeout).is_err() {
            let (o, e) = (bg.stdout(), bg.stderr());
            panic!("{cmd:?} not ready within {timeout:?} (no line with {ready:?})\nstdout:\n{o}\nstderr:\n{e}");
        }
        bg
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Sends `sig` (0: none, as kill(2)) and waits (up to 60 s) for the
    /// exit; returns the status code (None if killed by a signal), stdout
    /// and stderr.
    pub fn stop(self, sig: i32) -> (Option<i32>, String, String) {
        let (code, out, err, _) = self.stop_measured(sig);
        (code, out, err)
    }

    /// [`Background::stop`], and the process's peak resident set size in
    /// bytes over its whole life (`ru_maxrss` from wait4(2), so what it
    /// did after the signal, such as draining at stop, counts too).
    pub fn stop_measured(mut self, sig: i32) -> (Option<i32>, String, String, u64) {
        let mut child = self.child.take().unwrap();
        let sig = (sig != 0).then(|| Signal::from_named_raw(sig).expect("a signal number"));
        let send = |child: &Child| {
            if let Some(sig) = sig {
                let _ = kill_process(Pid::from_child(child), sig);
            }
        };
        send(&child);
        let mut reaped = None;
        if let Some(every) = self.resend {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while reaped.is_none() && std::time::Instant::now() < deadline {
                match wait_timeout(&child, every) {
                    Ok(r) => reaped = Some(r),
                    Err(_) => send(&child),
                }
            }
        }
        let reaped = match reaped {
            Some(r) => r,
            None => wait_timeout(&child, Duration::from_secs(60)).unwrap_or_else(|stuck| {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "{stuck}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }),
        };
        // Give the pumps a moment to collect the last lines.
        std::thread::sleep(Duration::from_millis(100));
        (
            reaped.status.code(),
            self.stdout(),
            self.stderr(),
            reaped.peak_rss,
        )
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_timeout(child: &Child, timeout: Duration) -> Result<Reaped, String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(r) = reap(child.id(), false) {
            return Ok(r);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "process {} ({}) did not exit within {timeout:?}; where its threads were:\n{}",
                child.id(),
                std::fs::read_to_string(format!("/proc/{}/cmdline", child.id()))
                    .unwrap_or_default()
                    .replace('\0', " ")
                    .trim_end(),
                thread_stacks(child.id())
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child reaped by [`reap`]: how it ended, and its peak resident set size
/// in bytes (`ru_maxrss`: its whole life, up to the exit).
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    pub status: std::process::ExitStatus,
    pub peak_rss: u64,
}

/// Reaps our child `pid` with wait4(2), which also gives its resource
/// usage (`/proc/PID/status` is gone by then). `block`: wait for the
/// exit; otherwise None while the child still runs. The `Child` handle
/// must not be waited for afterwards: the process is gone.
pub fn reap(pid: u32, block: bool) -> Option<Reaped> {
    let pid = i32::try_from(pid).expect("a pid fits in pid_t");
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data (integers and timevals): all zeroes is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child, with valid pointers to our locals.
        let r = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if r == 0 {
            return None;
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::Interrupted,
                "wait4({pid}): {e}"
            );
            continue;
        }
        // ru_maxrss is in KiB on Linux (getrusage(2)).
        let peak_rss = u64::try_from(usage.ru_maxrss).expect("ru_maxrss >= 0") * 1024;
        return Some(Reaped {
            status: std::os::unix::process::ExitStatusExt::from_raw(status),
            peak_rss,
        });
    }
}

/// Each thread of `pid`: name, state and kernel stack (as root), so that a
/// hang says where it hangs.
fn thread_stacks(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "(gone)".into();
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let state = read("status")
            .lines()
            .find(|l| l.starts_with("State:"))
            .unwrap_or_default()
            .to_string();
        out.push_str(&format!(
            "-- tid {} ({}) {state}\n{}",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            read("stack")
        ));
    }
    out
}

/// Set by the kernel matrix (`cargo xtask kernels`) for the tests it runs
/// in its guests: Debian's kernels, where fentry programs load.
pub const MATRIX_KERNEL_ENV: &str = "FLOWDAR_MATRIX_KERNEL";

/// How a recording hooked its system calls, from its start line
/// (`...; system calls: fentry)`): `fentry`, `tracepoint`, or `fentry,
/// accept tracepoint` (threads already blocked in accept at attach).
pub fn syscall_hooks_used(stderr: &str) -> &str {
    let hooks = stderr
        .split("system calls: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no `system calls:` in the recording's start line:\n{stderr}"));
    assert!(
        ["fentry", "tracepoint", "fentry, accept tracepoint"].contains(&hooks),
        "system calls: {hooks}"
    );
    hooks
}

/// A trace file's path in a temp dir of its own, removed on drop; derefs to
/// the path.
pub struct TraceFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl TraceFile {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.flowdar");
        Self { _dir: dir, path }
    }
}

impl Default for TraceFile {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for TraceFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

/// `flowdar record --pid PID ARGS... -o FILE` in the background into a
/// fresh [`TraceFile`], ready once probes are attached.
pub fn record(pid: u32, args: &[&str]) -> (Background, TraceFile) {
    let trace = TraceFile::new();
    let pid = pid.to_string();
    let mut all = vec!["--pid", &pid];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", trace.to_str().expect("utf-8 temp path")]);
    (start_recorder(&all), trace)
}

/// `flowdar record --pid PID --profile PROFILE -o TRACE` in the
/// background, ready once probes are attached.
pub fn record_profile(pid: u32, profile: &str, trace: &Path) -> Background {
    start_recorder(&[
        "--pid",
        &pid.to_string(),
        "--profile",
        profile,
        "-o",
        trace.to_str().expect("utf-8 path"),
    ])
}

/// `flowdar record` in the background, ready once probes are attached.
pub fn start_recorder(args: &[&str]) -> Background {
    let mut cmd = Command::new(flowdar_bin());
    cmd.arg("record").args(args);
    Background::start(cmd, "Recording PID", Duration::from_secs(60))
}

/// bpftrace in the background. Its SIGINT can be lost: the handler only
/// sets a flag, and a signal that lands while bpftrace is busy printing
/// (after a load, with a backlog) is seen by nothing once it goes back to
/// an idle `epoll_wait` (seen here: stuck 60 s after SIGINT, in
/// `do_epoll_wait`). So the stop signal is repeated every 2 s.
fn bpftrace(cmd: Command) -> Background {
    let mut bg = Background::start(cmd, "Attaching", Duration::from_secs(60));
    bg.resend = Some(Duration::from_secs(2));
    bg
}

/// bpftrace counting entries and exits (split by zero/non-zero return) of
/// `functions` in `binary`, for processes whose tgid is `pid` or whose
/// parent is `pid` (Apache's children). An independent witness.
pub fn start_bpftrace_counter(pid: u32, probes: &[(&str, &str)]) -> Background {
    let filter = format!("/pid == {pid} || curtask->real_parent->tgid == {pid}/");
    let mut script = String::new();
    for (binary, func) in probes {
        script.push_str(&format!(
            "uprobe:{binary}:{func} {filter} {{ @entry[\"{func}\"] = count(); }}\n\
             uretprobe:{binary}:{func} {filter} {{ @exit[\"{func}\", retval == 0 ? \"zero\" : \"nonzero\"] = count(); }}\n"
        ));
    }
    let mut cmd = Command::new("bpftrace");
    cmd.arg("-e").arg(script);
    bpftrace(cmd)
}

/// bpftrace printing every completed call of `functions` in `binary` as
/// `C FUNCTION ENTRY_NS EXIT_NS` (bpf_ktime_get_ns, the clock of Flowdar's
/// timestamps), same process filter as [`start_bpftrace_counter`].
pub fn start_bpftrace_calls(pid: u32, binary: &str, functions: &[&str]) -> Background {
    let filter = format!("(pid == {pid} || curtask->real_parent->tgid == {pid})");
    let mut script = String::new();
    for (i, func) in functions.iter().enumerate() {
        script.push_str(&format!(
            "uprobe:{binary}:{func} /{filter}/ {{ @s{i}[tid] = nsecs; }}\n\
             uretprobe:{binary}:{func} /{filter} && @s{i}[tid]/ {{ printf(\"C {func} %lu %lu\\n\", @s{i}[tid], nsecs); delete(@s{i}[tid]); }}\n"
        ));
    }
    let mut cmd = Command::new("bpftrace");
    cmd.arg("-e").arg(script);
    bpftrace(cmd)
}

/// Completed calls printed by [`start_bpftrace_calls`], per function,
/// as (entry ns, exit ns). Panics if bpftrace reports lost events.
pub fn parse_bpftrace_calls(stdout: &str) -> HashMap<String, Vec<(u64, u64)>> {
    assert!(
        !stdout.contains("Lost"),
        "bpftrace lost events: the witness is incomplete"
    );
    let mut calls: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for line in stdout.lines() {
        let mut f = line.split_whitespace();
        if f.next() != Some("C") {
            continue;
        }
        let (Some(func), Some(a), Some(b)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
            calls.entry(func.to_string()).or_default().push((a, b));
        }
    }
    calls
}

/// Parses bpftrace's map dump: `@entry[f]: N` and `@exit[f, zero]: N`.
/// Keys printed more than once are summed: on some kernels (Debian 12's
/// 6.1 and 6.12) bpftrace 0.17 stores a string key with stray padding bytes, so one
/// key is printed as many `...: 1` lines.
pub fn parse_bpftrace_counts(stdout: &str) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for l in stdout.lines() {
        let Some((key, n)) = l.rsplit_once(':') else {
            continue;
        };
        let Ok(n) = n.trim().parse::<u64>() else {
            continue;
        };
        let key = key
            .trim()
            .trim_start_matches('@')
            .replace(['[', ']', ' '], "");
        *counts.entry(key).or_insert(0) += n;
    }
    counts
}

/// `flowdar export TRACE --format perfetto`, which must succeed: its
/// `traceEvents`.
pub fn perfetto_events(trace: &Path) -> Vec<serde_json::Value> {
    let json = trace.with_extension("perfetto.json");
    let out = flowdar(&[
        "export",
        trace.to_str().expect("utf-8 path"),
        "--format",
        "perfetto",
        "-o",
        json.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the export")).expect("json");
    let _ = std::fs::remove_file(&json);
    exported["traceEvents"]
        .as_array()
        .expect("traceEvents")
        .clone()
}

/// A trace read back whole (tests use small traces).
pub struct Trace {
    pub header: TraceHeader,
    pub footer: Option<TraceFooter>,
    pub events: Vec<Event>,
    pub warnings: Vec<String>,
}

impl Trace {
    pub fn read(path: &Path) -> Self {
        let mut events = Vec::new();
        let r = TraceReader::open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
            .for_each_event(|e| events.push(*e))
            .expect("read trace");
        Self {
            header: r.header().clone(),
            footer: r.footer().cloned(),
            events,
            warnings: r.warnings().iter().map(|w| w.to_string()).collect(),
        }
    }

    pub fn probe_id(&self, function: &str) -> u32 {
        self.header
            .probes
            .iter()
            .find(|p| p.function == function)
            .unwrap_or_else(|| panic!("{function} not in the probe table"))
            .id
    }

    /// Events of `function` of `kind`.
    pub fn count(&self, function: &str, kind: EventKind) -> usize {
        let id = self.probe_id(function);
        self.events
            .iter()
            .filter(|e| e.probe_id == id && e.kind == kind as u32)
            .count()
    }

    /// Exits of `function` whose return value is zero.
    pub fn zero_returns(&self, function: &str) -> usize {
        let id = self.probe_id(function);
        self.events
            .iter()
            .filter(|e| e.probe_id == id && e.kind == EventKind::Exit as u32 && e.args[0] == 0)
            .count()
    }

    /// Calls of `function` paired per thread, independently of Flowdar's
    /// analysis code: (entry ns, exit ns or None if still open at the end).
    pub fn calls(&self, function: &str) -> Vec<(u64, Option<u64>)> {
        let id = self.probe_id(function);
        let mut open: HashMap<u32, Vec<u64>> = HashMap::new();
        let mut out = Vec::new();
        let calls =
            |e: &&Event| e.kind == EventKind::Entry as u32 || e.kind == EventKind::Exit as u32;
        for e in self
            .events
            .iter()
            .filter(calls)
            .filter(|e| e.probe_id == id)
        {
            let stack = open.entry(e.tid).or_default();
            if e.kind == EventKind::Entry as u32 {
                stack.push(e.ts_ns);
            } else if let Some(entry) = stack.pop() {
                out.push((entry, Some(e.ts_ns)));
            }
        }
        out.extend(open.into_values().flatten().map(|entry| (entry, None)));
        out.sort();
        out
    }

    /// Checks, independently of flowdar's analysis code, that every exit
    /// returns from the innermost open call of the same function on its
    /// thread and that time never goes backwards on a thread. Returns the
    /// problems found (empty when consistent) and the calls left open.
    pub fn nesting_problems(&self) -> (Vec<String>, usize) {
        let mut stacks: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut last: HashMap<u32, u64> = HashMap::new();
        let mut problems = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            let prev = last.insert(e.tid, e.ts_ns).unwrap_or(0);
            if e.ts_ns < prev {
                problems.push(format!("event {i}: time goes back on tid {}", e.tid));
            }
            if e.kind != EventKind::Entry as u32 && e.kind != EventKind::Exit as u32 {
                continue; // client events, fold annotations: not calls
            }
            let stack = stacks.entry(e.tid).or_default();
            if e.kind == EventKind::Entry as u32 {
                stack.push(e.probe_id);
            } else {
                match stack.iter().rposition(|p| *p == e.probe_id) {
                    Some(at) if at + 1 == stack.len() => {
                        stack.pop();
                    }
                    Some(_) => problems.push(format!(
                        "event {i}: exit of probe {} on tid {} with calls open above it: {:?}",
                        e.probe_id, e.tid, stack
                    )),
                    // A return with no call of its function open on its
                    // thread: the call began while only return probes were
                    // in place (they go in first and come out last), so its
                    // entry is not in the trace. Flowdar's analysis counts
                    // these as unmatched exits; they are not nesting errors.
                    None => {}
                }
            }
        }
        (problems, stacks.values().map(Vec::len).sum())
    }
}

/// Names of our programs still loaded in the kernel (should be none once a
/// recorder has exited, however it exited).
pub fn leftover_programs() -> Vec<String> {
    flowdar::capture::loaded_flowdar_programs()
}

/// BPF links (uprobe_multi, perf or tracepoint) still holding one of our
/// programs, as "link ID -> program".
pub fn leftover_links() -> Vec<String> {
    flowdar::capture::loaded_flowdar_links()
}

/// Waits (up to 5 s) for every program and link of ours to be gone, and
/// returns what is left: the kernel frees a closed uprobe_multi link's
/// program after an RCU grace period, so "nothing stays" is checked over
/// time, not at the instant the tracer exits.
pub fn left_behind() -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = leftover_programs();
        left.extend(leftover_links());
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Links of the entry/exit call programs only (not the fork/exit tracepoints).
pub fn call_links() -> Vec<String> {
    leftover_links()
        .into_iter()
        .filter(|l| l.ends_with("-> flowdar_entry") || l.ends_with("-> flowdar_exit"))
        .collect()
}

/// Where bpf filesystems are conventionally mounted (systemd mounts one there).
pub const BPFFS: &str = "/sys/fs/bpf";
/// Where tracefs is mounted (Flowdar mounts it there when it is not).
pub const TRACEFS: &str = "/sys/kernel/tracing";

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo")
}

/// Mount points of the `fstype` filesystems in a `/proc/self/mountinfo`
/// text (proc_pid_mountinfo(5): the mount point is the fifth field, the
/// type the first after the ` - ` separator).
fn mounts_of(mountinfo: &str, fstype: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (mount, fs) = l.split_once(" - ")?;
            if fs.split(' ').next() != Some(fstype) {
                return None;
            }
            mount.split(' ').nth(4).map(str::to_string)
        })
        .collect()
}

/// Panics unless a `fstype` filesystem is mounted at `path`: a check that
/// lists what is left in it would otherwise read an empty directory (or
/// none) and pass whatever was left.
fn assert_mounted(mountinfo: &str, fstype: &str, path: &str) {
    assert!(
        mounts_of(mountinfo, fstype).iter().any(|m| m == path),
        "no {fstype} filesystem is mounted at {path}: nothing left there could be seen (mount -t {fstype} none {path})"
    );
}

/// A bpf filesystem at [`BPFFS`] while it lives, mounted if the system has
/// none there (this machine's init mounts none), unmounted on drop if it
/// was ours. Start it before the tracer under test: a pin needs a bpf
/// filesystem, and each mount is a filesystem of its own (the kernel's
/// `bpf_fill_super` per mount), so one mounted after the tracer ran could
/// not hold what it pinned.
pub struct BpffsMount {
    ours: bool,
}

impl BpffsMount {
    pub fn ensure() -> Self {
        if mounts_of(&mountinfo(), "bpf").iter().any(|m| m == BPFFS) {
            return Self { ours: false };
        }
        rustix::mount::mount(
            "bpf",
            BPFFS,
            "bpf",
            rustix::mount::MountFlags::empty(),
            None::<&std::ffi::CStr>,
        )
        .unwrap_or_else(|e| panic!("mount -t bpf bpf {BPFFS}: {e}"));
        Self { ours: true }
    }
}

impl Drop for BpffsMount {
    fn drop(&mut self) {
        if self.ours {
            let _ = rustix::mount::unmount(BPFFS, rustix::mount::UnmountFlags::empty());
        }
    }
}

/// Anything of ours pinned in a bpf filesystem (Flowdar never pins): every
/// one mounted is searched, and one must be mounted at [`BPFFS`] (see
/// [`BpffsMount`]).
pub fn pinned_objects() -> Vec<String> {
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().to_lowercase();
            if name.contains("flowdar")
                || ["events", "targets", "probe_config", "drops"].contains(&name.as_str())
            {
                out.push(path.display().to_string());
            }
            if path.is_dir() {
                walk(&path, out);
            }
        }
    }
    let info = mountinfo();
    assert_mounted(&info, "bpf", BPFFS);
    let mut out = Vec::new();
    for mount in mounts_of(&info, "bpf") {
        walk(Path::new(&mount), &mut out);
    }
    out
}

/// uprobe events in tracefs that mention flowdar (aya attaches through
/// perf_event_open, so there should never be any). tracefs must be
/// mounted at [`TRACEFS`].
pub fn leftover_tracefs_uprobes() -> Vec<String> {
    assert_mounted(&mountinfo(), "tracefs", TRACEFS);
    std::fs::read_to_string(Path::new(TRACEFS).join("uprobe_events"))
        .unwrap_or_else(|e| panic!("{TRACEFS}/uprobe_events: {e}"))
        .lines()
        .filter(|l| l.contains("flowdar") || l.contains("aya"))
        .map(str::to_string)
        .collect()
}

/// `n` requests, each on a fresh connection, one at a time; all answered.
pub fn fresh_connections(apache: &flowdar::server::ThrowawayApache, n: usize) {
    let plan = flowdar::server::LoadPlan {
        connections: n,
        requests_per_connection: 1,
        concurrency: 1,
        ..Default::default()
    };
    let r = flowdar::server::run_load(apache.addr(), &plan);
    assert_eq!((r.ok, r.errors), (n, 0), "every request must be answered");
}

/// An event-MPM Apache with 4 workers in 1 child: workers blocked in
/// `ap_queue_pop_something` before attach (whose return the kernel cannot
/// report) are recycled after a few connections.
pub fn small_event_apache() -> flowdar::server::ThrowawayApache {
    let extra = "StartServers 1\nServerLimit 1\nThreadsPerChild 4\nMinSpareThreads 1\nMaxSpareThreads 4\nMaxRequestWorkers 4\n";
    let opts = flowdar::server::ApacheOptions {
        extra_config: extra.into(),
        ..Default::default()
    };
    flowdar::server::ThrowawayApache::start(&opts).expect("start apache")
}

/// A C fixture from `tests/fixtures`, compiled into a temp dir.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub bin: PathBuf,
}

/// Compiles `source` (a fixture's text) with `-g` and `flags`.
pub fn compile_fixture(source: &str, name: &str, flags: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let bin = dir.path().join(format!("flowdar-{name}"));
    let ok = Command::new("gcc")
        .arg("-g")
        .args(flags)
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("gcc")
        .success();
    assert!(ok, "compiling {name}.c");
    Fixture { _dir: dir, bin }
}

/// Starts a fixture that prints "ready" and then waits for a line on
/// stdin; returns it with its stdout, once ready.
pub fn start_fixture(
    bin: &Path,
    arg: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let mut child = Command::new(bin)
        .arg(arg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    (child, stdout)
}

/// Back-to-back 1 s wrk runs (1 thread, 8 connections) against `addr`
/// until [`SteadyLoad::stop`]: a server busy from before a recorder
/// starts, however long attaching takes.
pub struct SteadyLoad {
    running: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl SteadyLoad {
    pub fn start(addr: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = running.clone();
        let thread = std::thread::spawn(move || {
            let mut requests = 0;
            while flag.load(Ordering::Relaxed) {
                let plan = flowdar::server::WrkPlan {
                    threads: 1,
                    connections: 8,
                    duration: Duration::from_secs(1),
                    ..Default::default()
                };
                requests += flowdar::server::run_wrk(addr, &plan).expect("wrk").requests;
            }
            requests
        });
        Self { running, thread }
    }

    /// Ends the load after its current run; returns the requests wrk sent.
    pub fn stop(self) -> u64 {
        self.running
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("load thread")
    }
}

/// A Slowloris (slowhttptest `-H`) from the lab's attacker host.
#[derive(Debug, Clone, Copy)]
pub struct Slowloris {
    pub connections: u32,
    /// Connections opened a second.
    pub rate: u32,
    /// Seconds between two header lines of a connection. slowhttptest
    /// sends every connection's line on one tick, which ends every held
    /// worker's poll at once: a capture stopped in those milliseconds
    /// finds some of them between two calls.
    pub interval_s: u32,
    /// Seconds the attack lasts.
    pub length_s: u32,
}

impl Slowloris {
    /// Starts it against `port` on the lab's server address.
    pub fn spawn(&self, lab: &flowdar::server::Lab, port: u16) -> Child {
        let n = |v: u32| v.to_string();
        lab.attacker
            .command("slowhttptest")
            .args(["-H", "-c", &n(self.connections), "-r", &n(self.rate)])
            .args([
                "-i",
                &n(self.interval_s),
                "-l",
                &n(self.length_s),
                "-p",
                "5",
            ])
            .args(["-u", &format!("http://{}:{port}/index.html", lab.server)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("slowhttptest (cargo xtask setup installs it)")
    }
}

/// The numbers a `flowdar` timeline's `series` polyline draws (its
/// `data-values`: "requests", "failures", "held"), from the SVG text `g`
/// (the first such series in it); empty when the series is not drawn.
pub fn timeline_series(g: &str, series: &str) -> Vec<u64> {
    g.split(&format!("data-series=\"{series}\" data-points=\""))
        .nth(1)
        .and_then(|r| r.split("data-values=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .map(|v| v.split_whitespace().map(|n| n.parse().unwrap()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two lines of this machine's /proc/self/mountinfo (no bpf filesystem).
    const NO_BPFFS: &str = "21 45 0:13 / /sys/kernel/tracing rw,relatime - tracefs nodev rw\n\
        24 45 0:22 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw\n";

    #[test]
    fn mounts_are_read_by_type_and_mount_point() {
        assert_eq!(mounts_of(NO_BPFFS, "tracefs"), [TRACEFS]);
        assert_eq!(mounts_of(NO_BPFFS, "sysfs"), ["/sys"]);
        assert!(mounts_of(NO_BPFFS, "bpf").is_empty());
        assert_mounted(NO_BPFFS, "tracefs", TRACEFS);
    }

    #[test]
    #[should_panic(expected = "no bpf filesystem is mounted at /sys/fs/bpf")]
    fn a_missing_bpf_filesystem_fails_the_check() {
        assert_mounted(NO_BPFFS, "bpf", BPFFS);
    }

    #[test]
    #[should_panic(expected = "no tracefs filesystem is mounted at /sys/kernel/tracing")]
    fn tracefs_elsewhere_fails_the_check() {
        let debugfs = NO_BPFFS.replace(TRACEFS, "/sys/kernel/debug/tracing");
        assert_mounted(&debugfs, "tracefs", TRACEFS);
    }

    #[test]
    #[expect(
        clippy::zombie_processes,
        reason = "reap (wait4) reaps the child, which clippy cannot see"
    )]
    fn a_reaped_child_reports_its_status_and_peak_memory() {
        // The shell keeps 64 MiB in a variable (tr makes the zeroes bytes a
        // variable can hold), then exits: the peak still counts them.
        let child = Command::new("sh")
            .args(["-c", "x=$(head -c 67108864 /dev/zero | tr '\\0' a); exit 3"])
            .spawn()
            .unwrap();
        let done = reap(child.id(), true).unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert!(done.peak_rss >= 64 << 20, "{done:?}");
    }
}
