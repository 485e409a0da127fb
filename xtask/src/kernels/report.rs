//! Reading a guest's logs and writing the matrix table.
use std::{path::Path, time::Duration};

use super::*;

/// Lines of a failed check's log to print where CI shows them (its logs
/// stay on the machine that ran it): from the first panic on (the message,
/// the stuck process's threads, its output), or else the log's end.
pub(super) fn failure_excerpt(log: &str, max_lines: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let from = lines
        .iter()
        .position(|l| l.contains("panicked at"))
        .unwrap_or_else(|| lines.len().saturating_sub(max_lines));
    let shown = &lines[from..lines.len().min(from + max_lines)];
    let mut out = shown.join("\n");
    if from + shown.len() < lines.len() {
        out.push_str(&format!(
            "\n[... {} more lines]",
            lines.len() - from - shown.len()
        ));
    }
    out
}

/// What went wrong in a failed check's log, on one line: a time-out, or the
/// panic's place and message with an `error` line of flowdar's (or else
/// the assertion's left and right), or the log's last line.
pub(super) fn first_error(log: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let find = |pred: &dyn Fn(&str) -> bool| lines.iter().copied().find(|l| pred(l));
    let text = if let Some(t) = find(&|l| l.starts_with("timed out after")) {
        t.to_string()
    } else {
        let error = find(&|l| l.to_ascii_lowercase().starts_with("error"));
        let panic = lines
            .iter()
            .position(|l| l.contains("panicked at"))
            .map(|i| {
                let place = lines[i]
                    .split("panicked at ")
                    .nth(1)
                    .unwrap_or("")
                    .trim_end_matches(':');
                let message = lines[i + 1..].iter().find(|l| !l.is_empty()).unwrap_or(&"");
                (place, *message)
            });
        let side = |s: &str| find(&|l| l.starts_with(s)).map(|l| l[s.len()..].trim());
        match (panic, error) {
            (Some((place, _)), Some(error)) => format!("{place}: {error}"),
            (Some((place, message)), None) => match (side("left:"), side("right:")) {
                (Some(l), Some(r)) => format!("{place}: {message} (left: {l}, right: {r})"),
                _ => format!("{place}: {message}"),
            },
            (None, Some(error)) => error.to_string(),
            (None, None) => lines
                .iter()
                .rev()
                .find(|l| !l.is_empty())
                .unwrap_or(&"(empty log)")
                .to_string(),
        }
    };
    let mut s: String = text.chars().take(300).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s.replace('|', "\\|")
}

/// What `flowdar` printed as its attach mode (a line `attach mode: X`, any
/// case) in the guest's logs; "?" when none says.
pub(super) fn attach_mode(logs: &Path) -> String {
    let mut modes: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for line in text.lines() {
            let lower = line.to_ascii_lowercase();
            if let Some(i) = lower.find("attach mode") {
                let rest = line[i + "attach mode".len()..]
                    .trim_start_matches([':', ' ', '='])
                    .split([',', ';', '(', ')'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                if !rest.is_empty() && !modes.contains(&rest) {
                    modes.push(rest);
                }
            }
        }
    }
    if modes.is_empty() {
        "?".into()
    } else {
        modes.sort();
        modes.join(" / ")
    }
}

pub(super) fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

/// The matrix as markdown: one row per kernel, then every check per kernel,
/// then what failed.
pub(super) fn report(runs: &[Run], checks: &[&Check]) -> String {
    let mut md = String::from(
        "| kernel | package | attach mode | passed | failed | boot + checks |\n\
         |---|---|---|---:|---:|---:|\n",
    );
    for r in runs {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.kernel.version,
            r.kernel.package,
            r.attach_mode,
            r.passed(),
            r.failed(),
            minutes(r.wall)
        ));
    }
    md.push_str("\n| check |");
    for r in runs {
        md.push_str(&format!(" {} |", r.kernel.label));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(runs.len()));
    md.push('\n');
    for (i, check) in checks.iter().enumerate() {
        md.push_str(&format!("| `{}` |", check.label()));
        for r in runs {
            let o = &r.outcomes[i];
            let verdict = match o.status {
                _ if o.passed => "ok".to_string(),
                Some(0) => "FAIL (exit 0)".to_string(),
                Some(124) => "TIMEOUT".to_string(),
                Some(n) => format!("FAIL ({n})"),
                None => "not run".to_string(),
            };
            md.push_str(&format!(" {verdict}, {:.1} s |", o.seconds));
        }
        md.push('\n');
    }
    let mut failures = String::new();
    for r in runs {
        if !r.note.is_empty() {
            failures.push_str(&format!("- {}: {}\n", r.kernel.version, r.note));
        }
        for (check, o) in checks.iter().zip(&r.outcomes) {
            if !o.passed {
                failures.push_str(&format!(
                    "- {} `{}`: {}\n",
                    r.kernel.version, check.name, o.error
                ));
            }
        }
    }
    if !failures.is_empty() {
        md.push_str("\nFailures (full logs in target/kernels/VERSION/logs/):\n\n");
        md.push_str(&failures);
    }
    md
}
