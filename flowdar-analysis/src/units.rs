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

/// A wall-clock length from the command line: `30s`, `2m`, `500ms`, or a
/// bare number of seconds (`30`, `1.5`), as timeout(1) takes it.
pub fn parse_wall_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("`{s}` is not a length of time"));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("`{s}`: {e} (e.g. 30s, 2m, 500ms, or 30 for seconds)"))
}

#[cfg(test)]
mod wall_tests {
    use super::parse_wall_duration as p;
    use std::time::Duration;

    #[test]
    fn bare_numbers_are_seconds_and_units_are_kept() {
        assert_eq!(p("30"), Ok(Duration::from_secs(30)));
        assert_eq!(p("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(p("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(p("500ms"), Ok(Duration::from_millis(500)));
        assert!(p("-3").is_err());
        assert!(p("1e30").is_err());
        assert!(p("NaN").is_err());
        assert!(p("soon").unwrap_err().contains("30 for seconds"));
    }
}
