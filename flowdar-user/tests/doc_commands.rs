//! Every `flowdar ...` command shown in README.md and BENCHMARKS.md parses
//! with the real command line (clap, nothing run): a renamed subcommand or
//! flag fails here, not in a reader's terminal. The `cargo xtask ...` ones
//! are checked in xtask's own tests.
use clap::Parser as _;
use flowdar::cli::Cli;
use xtask::doc_commands::{self, Program};

#[test]
fn every_flowdar_command_in_the_docs_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Err(report) = doc_commands::check_all::<Cli>(&root, Program::Flowdar, 30) {
        panic!("{report}");
    }
}

#[test]
fn a_renamed_flag_is_caught() {
    let md = "`flowdar record --pid 1 --profile apache:request -o t.flowdar --duraton 5s`";
    let commands = doc_commands::extract(std::path::Path::new("t.md"), md);
    assert_eq!(commands.len(), 1);
    let e = Cli::try_parse_from(&commands[0].argv).expect_err("a misspelt flag");
    assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
}
