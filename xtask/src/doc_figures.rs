//! Figures the docs quote in more than one place. Each quote is marked
//! with an HTML comment naming the figure, right before its value:
//!
//! ```markdown
//! attached in <!-- fig full-attach -->55 ms and detached in ...
//! ```
//!
//! The comment does not show when the Markdown is rendered. Every mark of a
//! name must be followed by the same value (a number and its unit), so a
//! figure updated in one place and not in another fails a test instead of
//! misleading a reader. A name marked once is refused too: a mark exists
//! to tie two quotes together.
use std::{collections::BTreeMap, path::Path};

/// The documents whose figures are checked.
pub const DOCUMENTS: &[&str] = &["README.md", "BENCHMARKS.md", "RELIABILITY.md"];

/// One marked quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub file: String,
    /// 1-based.
    pub line: usize,
    pub name: String,
    /// The number and its unit as written (`55 ms`, `86.1%`, `0.65x`).
    pub value: String,
}

const OPEN: &str = "<!-- fig ";
const CLOSE: &str = "-->";

/// The marked quotes of one document's text.
pub fn quotes(file: &str, text: &str) -> Vec<Quote> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find(OPEN) {
            rest = &rest[at + OPEN.len()..];
            let Some(end) = rest.find(CLOSE) else {
                break;
            };
            let name = rest[..end].trim().to_string();
            rest = &rest[end + CLOSE.len()..];
            out.push(Quote {
                file: file.into(),
                line: i + 1,
                name,
                value: value_at(rest),
            });
        }
    }
    out
}

/// The number at the start of `s` and its unit: digits with `.`/`,`, then
/// a `%` or `x`, or a space and a unit word (`ms`, `s`, `µs`, `req/s`...).
fn value_at(s: &str) -> String {
    let number: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .collect();
    let number = number.trim_end_matches(['.', ',']).to_string();
    let after = &s[number.len()..];
    if let Some(sign) = after.chars().next().filter(|c| *c == '%' || *c == 'x') {
        return format!("{number}{sign}");
    }
    let unit: String = after
        .strip_prefix(' ')
        .unwrap_or("")
        .chars()
        .take_while(|c| c.is_alphabetic() || *c == '/')
        .collect();
    const UNITS: &[&str] = &[
        "ns",
        "µs",
        "us",
        "ms",
        "s",
        "min",
        "minutes",
        "KiB",
        "MiB",
        "GiB",
        "GB",
        "req/s",
        "requests/s",
    ];
    if UNITS.contains(&unit.as_str()) {
        format!("{number} {unit}")
    } else {
        number
    }
}

/// Checks every marked figure of the [`DOCUMENTS`] under `root`: each name
/// is marked at least twice, always before a value, always the same one.
/// `Ok(n)`: `n` names tie their quotes. `Err`: a report of the others.
pub fn check_all(root: &Path) -> Result<usize, String> {
    let mut all = Vec::new();
    for doc in DOCUMENTS {
        let text =
            std::fs::read_to_string(root.join(doc)).map_err(|e| format!("reading {doc}: {e}"))?;
        all.extend(quotes(doc, &text));
    }
    check(&all)
}

/// [`check_all`] on quotes already read.
pub fn check(all: &[Quote]) -> Result<usize, String> {
    let mut by_name: BTreeMap<&str, Vec<&Quote>> = BTreeMap::new();
    for q in all {
        by_name.entry(&q.name).or_default().push(q);
    }
    let mut problems = Vec::new();
    for (name, qs) in &by_name {
        let at = |q: &Quote| format!("{}:{} `{}`", q.file, q.line, q.value);
        if let Some(q) = qs.iter().find(|q| q.value.is_empty()) {
            problems.push(format!(
                "figure `{name}` at {}:{} marks no number",
                q.file, q.line
            ));
        } else if qs.len() < 2 {
            problems.push(format!(
                "figure `{name}` is marked once ({}): a mark ties two quotes",
                at(qs[0])
            ));
        } else if qs.iter().any(|q| q.value != qs[0].value) {
            let list: Vec<String> = qs.iter().map(|q| at(q)).collect();
            problems.push(format!(
                "figure `{name}` is quoted differently: {}",
                list.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        Ok(by_name.len())
    } else {
        Err(problems.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keep_their_unit() {
        let q = quotes(
            "R.md",
            "attached in <!-- fig a -->55 ms, <!-- fig b -->86.1% of normal, <!-- fig c -->0.65x; <!-- fig d -->2.29 s. <!-- fig e -->17940 requests/s <!-- fig f -->1436 functions",
        );
        let values: Vec<&str> = q.iter().map(|q| q.value.as_str()).collect();
        assert_eq!(
            values,
            [
                "55 ms",
                "86.1%",
                "0.65x",
                "2.29 s",
                "17940 requests/s",
                "1436"
            ]
        );
        assert_eq!(q[0].name, "a");
        assert_eq!(q[0].line, 1);
    }

    #[test]
    fn a_figure_quoted_differently_is_caught() {
        let mut all = quotes("README.md", "x\nattached in <!-- fig full-attach -->46 ms");
        all.extend(quotes(
            "BENCHMARKS.md",
            "| attach | <!-- fig full-attach -->55 ms |",
        ));
        let e = check(&all).unwrap_err();
        assert_eq!(
            e,
            "figure `full-attach` is quoted differently: README.md:2 `46 ms`, BENCHMARKS.md:1 `55 ms`"
        );
    }

    #[test]
    fn a_lone_mark_and_a_mark_without_a_number_are_caught() {
        let all = quotes("R.md", "<!-- fig once -->3 s and <!-- fig none -->about");
        let e = check(&all).unwrap_err();
        assert!(e.contains("figure `none` at R.md:1 marks no number"), "{e}");
        assert!(
            e.contains("figure `once` is marked once (R.md:1 `3 s`)"),
            "{e}"
        );
    }

    #[test]
    fn the_docs_quote_each_marked_figure_alike() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        match check_all(&root) {
            Ok(n) => assert!(n >= 5, "only {n} marked figures: did the marks go?"),
            Err(report) => panic!("{report}"),
        }
    }
}
