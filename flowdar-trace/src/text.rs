//! How Flowdar writes things for people, shared by every user-space crate
//! (this is the bottom one): an error and its causes on one line, and where
//! in a config text an offset falls.
use std::error::Error;

/// An error and its causes on one line, `context: cause: cause's cause`:
/// every error type displays its own context only and keeps its cause as
/// `source` (aya's convention), so each cause appears once.
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        next = cause.source();
    }
    line.replace('\n', " ")
}

/// The 1-based line and column (in characters) of byte `offset` in `text`:
/// where a config file's error points (probe files, experiment specs).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read trace t.flowdar")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_each_cause_once() {
        let e = Outer(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(
            one_line(&e),
            "cannot read trace t.flowdar: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn offsets_become_lines_and_columns() {
        assert_eq!(line_col("ab\ncé\nx", 0), (1, 1));
        assert_eq!(line_col("ab\ncé\nx", 3), (2, 1));
        // Columns count characters; an offset inside one snaps back.
        assert_eq!(line_col("ab\ncé\nx", 6), (2, 3));
        assert_eq!(line_col("ab\ncé\nx", 5), (2, 2));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
