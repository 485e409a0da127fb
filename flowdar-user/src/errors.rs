//! Errors as one line. Every error type in Flowdar displays its own context
//! only and carries its cause as `source` (aya's convention), so a message
//! is the chain joined, each cause once.
use std::error::Error;

/// `context: cause: cause's cause`, on one line.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        next = cause.source();
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read trace t.flowdar")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn joins_each_cause_once() {
        let e = Outer(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(
            chain(&e),
            "cannot read trace t.flowdar: No such file or directory (os error 2)"
        );
    }
}
