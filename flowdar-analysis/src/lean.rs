//! What a lean trace holds and what it cannot give. A lean trace
//! (`apache:lean`) has the server's socket system calls, from the kernel's
//! tracepoints, and requests counted by one entry-only uprobe: no
//! function of Apache's is timed.
use flowdar_trace::TraceProbe;

/// The figures a lean trace cannot give, and how to get them: one line.
pub const LEAN_LIMITS: &str = "a lean trace (the server's socket system calls and one request counter) times no function of Apache's: no handler or read-path time by function, no hand-offs between threads (`flows`), no TLS or backend time; record with --profile apache:request,io (or add apache:tls, apache:backend) for those, at a higher cost";

/// Whether `probes` are a lean trace's: system calls, and uprobes only
/// without a return (counters).
pub fn is_lean(probes: &[TraceProbe]) -> bool {
    probes.iter().any(TraceProbe::is_syscall)
        && probes
            .iter()
            .all(|p| p.is_syscall() || p.capture.entry_only)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::probe;

    #[test]
    fn only_system_calls_and_counters_make_a_lean_trace() {
        let read = TraceProbe::syscall(0, "read", 0, Default::default());
        let mut counter = probe(1, "ap_process_async_request", None);
        counter.capture.entry_only = true;
        let timed = probe(2, "ap_invoke_handler", None);
        assert!(read.is_syscall(), "{read:?}");
        assert!(is_lean(&[read.clone(), counter.clone()]));
        assert!(!is_lean(&[read, counter.clone(), timed.clone()]));
        assert!(!is_lean(&[counter, timed]), "no system call: not lean");
    }
}
