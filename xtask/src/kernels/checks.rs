//! The checks every guest runs: root integration tests and `flowdar` runs.
use super::verdict;

/// One check run in every guest.
pub(super) struct Check {
    /// Row label; also the log's file name in the guest's output directory.
    pub(super) name: &'static str,
    /// Seconds before the guest script kills it (TCG is several times
    /// slower than the host).
    pub(super) limit: u32,
    pub(super) what: What,
}

pub(super) enum What {
    /// A root integration test: `tests/tests/FILE.rs`, function TEST, run
    /// alone; it passes when libtest says that one test ran and passed.
    Test {
        file: &'static str,
        test: &'static str,
    },
    /// `flowdar ARGS...`, which must exit 0, and whose output `verdict`
    /// must accept.
    Flowdar {
        args: &'static [&'static str],
        verdict: fn(&str) -> Result<(), String>,
    },
}

/// The subset: one test per path that differs between kernels (attach,
/// the in-kernel process filter, fork following, the perf-event fallback,
/// teardown after SIGKILL), plus the two user-facing runs with defaults.
pub(super) const CHECKS: &[Check] = &[
    // The lighter tour with its defaults (attach mode: auto): every one of
    // its 1000 requests in the trace, the attach mode it used printed.
    Check {
        name: "the_demo_records_every_request_exactly",
        limit: 180,
        what: What::Test {
            file: "demo",
            test: "the_demo_records_every_request_exactly",
        },
    },
    // Exact counts against bpftrace (event MPM), default attach mode.
    Check {
        name: "exact_counts_on_fresh_connections_match_bpftrace",
        limit: 180,
        what: What::Test {
            file: "record_apache",
            test: "exact_counts_on_fresh_connections_match_bpftrace",
        },
    },
    // record --min-duration: the shadow-stack programs, verified and run
    // on this kernel (the default attach mode).
    Check {
        name: "min_duration_drops_short_calls_exactly_by_default",
        limit: 180,
        what: What::Test {
            file: "min_duration",
            test: "min_duration_drops_short_calls_exactly_by_default",
        },
    },
    // Fork following in the kernel (prefork children born after attach).
    Check {
        name: "prefork_children_forked_after_attach_are_traced_and_strangers_are_not",
        limit: 180,
        what: What::Test {
            file: "process_tree",
            test: "prefork_children_forked_after_attach_are_traced_and_strangers_are_not",
        },
    },
    // The in-kernel filter against a second Apache mapping the same files.
    Check {
        name: "other_processes_mapping_the_same_files_are_not_traced",
        limit: 180,
        what: What::Test {
            file: "record_apache",
            test: "other_processes_mapping_the_same_files_are_not_traced",
        },
    },
    // `--attach-mode perf`: the path older kernels need, detach included.
    Check {
        name: "perf_event_attach_mode_records_the_same_counts",
        limit: 180,
        what: What::Test {
            file: "record_apache",
            test: "perf_event_attach_mode_records_the_same_counts",
        },
    },
    // A SIGKILLed recorder leaves no program, link or pin behind.
    Check {
        name: "sigkill_leaves_no_probe_and_a_readable_trace",
        limit: 180,
        what: What::Test {
            file: "lifecycle",
            test: "sigkill_leaves_no_probe_and_a_readable_trace",
        },
    },
    // `record --profile apache:request` attached to a server under wrk with
    // the default attach mode: no phantom in-flight calls, exact counts
    // against bpftrace; and the same when detaching mid-load.
    Check {
        name: "attached_under_load_by_default_leaves_no_phantom_calls_and_counts_exactly",
        limit: 180,
        what: What::Test {
            file: "busy_server",
            test: "attached_under_load_by_default_leaves_no_phantom_calls_and_counts_exactly",
        },
    },
    Check {
        name: "detached_mid_load_by_default_leaves_no_phantom_calls_and_counts_exactly",
        limit: 180,
        what: What::Test {
            file: "busy_server",
            test: "detached_mid_load_by_default_leaves_no_phantom_calls_and_counts_exactly",
        },
    },
    // Apache over TLS and HTTP/2 (mod_ssl, mod_http2) with apache:request:
    // sessions, the client and every stream's worker, exact against
    // bpftrace (the two-hop r->connection->master read in the kernel).
    Check {
        name: "http2_and_tls_sessions_clients_and_streams_are_exact",
        limit: 300,
        what: What::Test {
            file: "http2",
            test: "http2_and_tls_sessions_clients_and_streams_are_exact",
        },
    },
    // The HTTP/2 era's attacks (issue #29): a Rapid Reset from the lab's
    // attack client, streams opened and reset in libnghttp2 (uprobes on a
    // library of mod_http2's) exactly as the client counts them, beside the
    // lean capture's tracepoints.
    Check {
        name: "h2_rapid_reset_streams_opened_and_reset_match_the_attack_client",
        limit: 180,
        what: What::Test {
            file: "h2_attacks",
            test: "h2_rapid_reset_streams_opened_and_reset_match_the_attack_client",
        },
    },
    // W3C trace context (issue #32): the request set's entry program scans
    // r->headers_in for `traceparent` in BPF functions of its own (bounded
    // loops, calls between BPF functions, 512 bytes of stack shared), and
    // the OTLP export joins the caller's trace.
    Check {
        name: "a_traceparent_sent_by_the_client_is_joined",
        limit: 180,
        what: What::Test {
            file: "otlp",
            test: "a_traceparent_sent_by_the_client_is_joined",
        },
    },
    // The lean capture (apache:lean): syscall tracepoints with the peer
    // address read at accept, one uprobe a request; exact per client
    // (IPv4, IPv6) against the access log, a Slowloris holding the reads.
    Check {
        name: "a_lean_capture_is_exact_per_client_and_the_attacker_holds_the_reads",
        limit: 180,
        what: What::Test {
            file: "clients",
            test: "a_lean_capture_is_exact_per_client_and_the_attacker_holds_the_reads",
        },
    },
    // The lean capture's system calls through fentry/fexit, forced (Debian's
    // kernels allow them; the host of this project's CI does not), with
    // workers already waiting at attach, whose returns fexit never sees.
    Check {
        name: "a_lean_recording_shows_the_workers_held_before_it_began",
        limit: 180,
        what: What::Test {
            file: "record_apache",
            test: "a_lean_recording_shows_the_workers_held_before_it_began",
        },
    },
    // A server in its own mount and PID namespaces, recorded by host PID.
    Check {
        name: "a_server_in_its_own_namespaces_is_recorded_by_host_pid",
        limit: 180,
        what: What::Test {
            file: "container",
            test: "a_server_in_its_own_namespaces_is_recorded_by_host_pid",
        },
    },
    // A non-root user with the capabilities this kernel needs (perf-event
    // uprobes and perf_event_paranoid 3 need CAP_SYS_ADMIN on Debian's).
    Check {
        name: "nobody_with_the_needed_capabilities_records_exact_counts",
        limit: 180,
        what: What::Test {
            file: "capabilities",
            test: "nobody_with_the_needed_capabilities_records_exact_counts",
        },
    },
    // Apache not named like Debian's: `httpd` with its own libapr.
    Check {
        name: "an_httpd_named_build_with_its_own_apr_is_traced_by_the_profile",
        limit: 180,
        what: What::Test {
            file: "any_apache",
            test: "an_httpd_named_build_with_its_own_apr_is_traced_by_the_profile",
        },
    },
    // The built-in DoS experiment (wrk, slowhttptest, 150-worker Apache,
    // report): its report must find the denial without mitigation and the
    // recovery with mod_reqtimeout. Phases capped at 20 s, as in the root
    // test: the recovery takes seconds of the attack (the held connections
    // drain one timeout at a time), and a 5 s phase spends half of itself
    // on the attack's ramp (README, "Kernels").
    Check {
        name: "flowdar_experiment",
        limit: 420,
        what: What::Flowdar {
            args: &[
                "experiment",
                "--default",
                "--max-phase",
                "20s",
                "-o",
                "/tmp/flowdar-guest/experiment",
                "--force",
            ],
            verdict: verdict::experiment_report,
        },
    },
];

impl Check {
    pub(super) fn label(&self) -> String {
        match &self.what {
            What::Test { file, test } => format!("{file}::{test}"),
            What::Flowdar { args, .. } => format!("flowdar {}", args.join(" ")),
        }
    }

    /// Whether the log of a run that exited 0 shows a pass.
    pub(super) fn verdict(&self, log: &str) -> Result<(), String> {
        match &self.what {
            What::Test { .. } => verdict::one_test_passed(log),
            What::Flowdar { verdict, .. } => verdict(log),
        }
    }
}
