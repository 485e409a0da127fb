//! Durations and sizes for people: one formatting used by every output.

/// A duration in the unit that reads best (ns, µs, ms, s).
pub fn ns(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_999 => format!("{:.1} µs", ns as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// A signed duration (`+1.2 ms`, `-3.0 µs`).
pub fn signed_ns(v: f64) -> String {
    if v < 0.0 {
        format!("-{}", ns((-v) as u64))
    } else {
        format!("+{}", ns(v as u64))
    }
}

/// A byte count with a binary unit.
pub fn bytes(b: u64) -> String {
    match b {
        0..=9_999 => format!("{b} B"),
        10_000..=9_999_999 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn units() {
        assert_eq!(super::ns(950), "950 ns");
        assert_eq!(super::ns(12_345), "12.3 µs");
        assert_eq!(super::ns(1_234_567), "1.2 ms");
        assert_eq!(super::ns(12_345_678), "12.3 ms");
        assert_eq!(super::ns(12_345_678_901), "12.35 s");
        assert_eq!(super::signed_ns(-1500.0), "-1.5 µs");
        assert_eq!(super::bytes(20_480), "20.0 KiB");
    }
}
