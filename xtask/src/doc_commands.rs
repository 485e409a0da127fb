//! The commands shown in README.md and BENCHMARKS.md, as argument vectors,
//! so that tests can parse each with the real command-line definition: a
//! renamed flag or subcommand then fails a test instead of a reader.
//!
//! Taken: lines of fenced code blocks and inline code spans whose first
//! word is `flowdar` (also `sudo flowdar`, `$ flowdar`, a path ending in
//! `/flowdar`) or `cargo xtask`. Shell around them is dropped: comments,
//! pipes, redirections, `&&` chains, line continuations. `$(...)` and the
//! docs' placeholders (`PID`, `N`, ...) become sample values of the right
//! kind, and `[optional parts]` are kept as if given.
//!
//! A command in a code block is a whole command line and must parse as one;
//! inline code in prose often names a subcommand with some of its flags
//! (`flowdar record --attach-mode perf`), so [`DocCommand::accepts`] lets
//! those leave out required arguments, while every word given must still
//! parse: clap reports unknown arguments and bad values before missing ones.
use std::path::{Path, PathBuf};

/// Which command line a command belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// The `flowdar` binary.
    Flowdar,
    /// `cargo xtask` (argv[0] is `cargo xtask`).
    Xtask,
}

/// One command found in a document.
#[derive(Debug, Clone)]
pub struct DocCommand {
    pub file: PathBuf,
    /// 1-based line where the command starts.
    pub line: usize,
    pub program: Program,
    /// As parsers take it: argv[0] is the program.
    pub argv: Vec<String>,
    /// The command as written, for messages.
    pub text: String,
    /// From a fenced code block (a whole command line), not inline code.
    pub fenced: bool,
}

impl DocCommand {
    /// Whether a parser's verdict on [`Self::argv`] is a pass: parsed, or
    /// help or version shown, or (inline code only) required arguments left
    /// out with every given word accepted.
    pub fn accepts(&self, verdict: Result<(), &clap::Error>) -> bool {
        use clap::error::ErrorKind;
        match verdict {
            Ok(()) => true,
            Err(e) => match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => true,
                ErrorKind::MissingRequiredArgument => !self.fenced,
                _ => false,
            },
        }
    }
}

impl std::fmt::Display for DocCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: `{}`", self.file.display(), self.line, self.text)
    }
}

/// The documents whose commands are checked, relative to the workspace root.
pub const DOCUMENTS: &[&str] = &["README.md", "BENCHMARKS.md"];

/// Every command in the [`DOCUMENTS`] under `root` (the workspace root).
pub fn in_documents(root: &Path) -> std::io::Result<Vec<DocCommand>> {
    let mut all = Vec::new();
    for doc in DOCUMENTS {
        let text = std::fs::read_to_string(root.join(doc))?;
        all.extend(extract(Path::new(doc), &text));
    }
    Ok(all)
}

/// Parses every `program` command of the [`DOCUMENTS`] under `root` with
/// `C`, the real command line. `Ok(n)`: all `n` pass. `Err`: a report of the
/// commands `C` rejects, with clap's reason, or of too few commands found
/// (fewer than `at_least`: the extraction broke).
pub fn check_all<C: clap::Parser>(
    root: &Path,
    program: Program,
    at_least: usize,
) -> Result<usize, String> {
    let commands: Vec<_> = in_documents(root)
        .map_err(|e| format!("reading the docs: {e}"))?
        .into_iter()
        .filter(|c| c.program == program)
        .collect();
    if commands.len() < at_least {
        return Err(format!(
            "only {} {program:?} commands found in the docs: is the extraction broken?",
            commands.len()
        ));
    }
    let failures: Vec<String> = commands
        .iter()
        .filter_map(|c| {
            let verdict = C::try_parse_from(&c.argv).map(|_| ());
            (!c.accepts(verdict.as_ref().map(|_| ()))).then(|| {
                let why = verdict.err().map(|e| e.render().to_string());
                format!("{c}\n  {}", why.unwrap_or_default().replace('\n', "\n  "))
            })
        })
        .collect();
    if failures.is_empty() {
        Ok(commands.len())
    } else {
        Err(format!(
            "commands in the docs that {program:?} rejects:\n{}",
            failures.join("\n")
        ))
    }
}

/// Placeholders the docs use for values, and what a parser is given
/// instead: numbers where the flag takes a number, names elsewhere.
const PLACEHOLDERS: &[(&str, &str)] = &[("PID", "1234"), ("P", "1234"), ("N", "2"), ("ID", "2")];

/// Commands in one Markdown document.
pub fn extract(file: &Path, markdown: &str) -> Vec<DocCommand> {
    let mut found = Vec::new();
    let mut in_fence = false;
    // A fenced command continued with a trailing backslash, or an inline
    // span continued on the next line: (first line, text so far).
    let mut pending: Option<(usize, String)> = None;
    let mut span: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let number = i + 1;
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            (pending, span) = (None, None);
            continue;
        }
        if in_fence {
            let (start, text) = match pending.take() {
                Some((start, mut text)) => {
                    text.push(' ');
                    text.push_str(line.trim());
                    (start, text)
                }
                None => (number, line.trim().to_string()),
            };
            if let Some(rest) = text.strip_suffix('\\') {
                pending = Some((start, rest.trim_end().to_string()));
                continue;
            }
            found.extend(command(file, start, &text, true));
            continue;
        }
        if line.trim().is_empty() {
            // A paragraph ends: an unclosed backtick was not a span.
            span = None;
            continue;
        }
        // Inline spans, which may run on over line breaks.
        for (j, part) in line.split('`').enumerate() {
            if j > 0 {
                span = match span.take() {
                    Some((start, text)) => {
                        found.extend(command(file, start, &text, false));
                        None
                    }
                    None => Some((number, String::new())),
                };
            }
            if let Some((_, text)) = &mut span {
                if j == 0 {
                    text.push(' ');
                }
                text.push_str(part);
            }
        }
    }
    found
}

/// The command a code line or span holds, if it is one of ours.
fn command(file: &Path, line: usize, text: &str, fenced: bool) -> Option<DocCommand> {
    let text = text.trim().trim_start_matches("$ ").trim();
    let text = text.strip_prefix("sudo ").unwrap_or(text);
    // Markdown tables escape their pipes: `auto\|perf` is one word.
    let unescaped = text.replace("\\|", "\u{1}");
    let shell = strip_shell(&unescaped);
    let mut words = shell.split_whitespace();
    let first = words.next()?;
    let program = if first == "flowdar" || first.ends_with("/flowdar") {
        Program::Flowdar
    } else if first == "cargo" && words.next() == Some("xtask") {
        Program::Xtask
    } else {
        return None;
    };
    let mut argv = vec![match program {
        Program::Flowdar => "flowdar".to_string(),
        Program::Xtask => "cargo xtask".to_string(),
    }];
    for word in words {
        let word = word.replace('\u{1}', "|");
        let word = word.trim_matches(|c| c == '[' || c == ']');
        if word.is_empty() {
            continue;
        }
        let value = PLACEHOLDERS
            .iter()
            .find(|(name, _)| *name == word)
            .map_or(word, |(_, value)| value);
        argv.push(value.to_string());
    }
    // A bare program name is a mention, not a command.
    (argv.len() > 1).then(|| DocCommand {
        file: file.to_path_buf(),
        line,
        program,
        argv,
        text: text.to_string(),
        fenced,
    })
}

/// The first simple command of a shell line: `$(...)` replaced by a PID,
/// comments, pipes, redirections and `&&`/`;` chains cut off.
fn strip_shell(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' if chars.peek() == Some(&'(') => {
                let mut depth = 0;
                for c in chars.by_ref() {
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 1 => break,
                        ')' => depth -= 1,
                        _ => {}
                    }
                }
                out.push_str("1234");
            }
            '#' if out.is_empty() || out.ends_with(' ') => break,
            '|' | '>' | '<' | ';' | '&' => break,
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argvs(markdown: &str) -> Vec<Vec<String>> {
        extract(Path::new("t.md"), markdown)
            .into_iter()
            .map(|c| c.argv)
            .collect()
    }

    #[test]
    fn fenced_commands_lose_their_shell_and_keep_their_arguments() {
        let md = "text\n```sh\n# a comment\nsudo flowdar record --pid $(cat /run/a.pid) \\\n    --probes p.toml \\\n    -o a.flowdar --duration 30s\nflowdar dump a.flowdar | less   # read it\ncargo xtask demo    # the demo\nflowdar experiment --print-default > my.toml\n```\n";
        assert_eq!(
            argvs(md),
            vec![
                vec![
                    "flowdar",
                    "record",
                    "--pid",
                    "1234",
                    "--probes",
                    "p.toml",
                    "-o",
                    "a.flowdar",
                    "--duration",
                    "30s"
                ],
                vec!["flowdar", "dump", "a.flowdar"],
                vec!["cargo xtask", "demo"],
                vec!["flowdar", "experiment", "--print-default"],
            ]
        );
    }

    #[test]
    fn inline_commands_with_placeholders_and_optional_parts_are_taken() {
        let md = "Run `flowdar sessions T [--show ID]` or `cargo xtask fuzz --seconds N`; \
                  `flowdar-user/profiles/apache.toml` and `flowdar` are not commands, \
                  `--attach-mode auto\\|perf` neither; `flowdar probes --pid PID` is.";
        assert_eq!(
            argvs(md),
            vec![
                vec!["flowdar", "sessions", "T", "--show", "2"],
                vec!["cargo xtask", "fuzz", "--seconds", "2"],
                vec!["flowdar", "probes", "--pid", "1234"],
            ]
        );
    }

    #[test]
    fn an_inline_span_may_run_over_a_line_break() {
        let md = "first (`cargo\nxtask fuzz --seconds N` for longer) and `flowdar\n  experiment --default`.\n\nAn unclosed ` here\n\n`flowdar kernel`";
        assert_eq!(
            argvs(md),
            vec![
                vec!["cargo xtask", "fuzz", "--seconds", "2"],
                vec!["flowdar", "experiment", "--default"],
                vec!["flowdar", "kernel"],
            ]
        );
    }

    #[test]
    fn output_lines_and_prompts_in_text_blocks() {
        let md = "```text\n$ flowdar probes --pid 1234 --profile apache:handoff\nfunction   object\nflowdar-ebpf    kernel side\n```\n`target/debug/flowdar experiment --default`";
        assert_eq!(
            argvs(md),
            vec![
                vec![
                    "flowdar",
                    "probes",
                    "--pid",
                    "1234",
                    "--profile",
                    "apache:handoff"
                ],
                vec!["flowdar", "experiment", "--default"],
            ]
        );
    }
}
