//! Hidden `flowdar completions SHELL` and `flowdar man DIR`: shell
//! completions (clap_complete) and one man page per subcommand
//! (clap_mangen), generated from the very clap definition that parses the
//! command line, so they never drift from it. `cargo xtask install` runs them.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

/// Print a completion script for SHELL (bash, zsh, fish, ...) to stdout.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Write man pages into DIR: flowdar.1 and flowdar-SUBCOMMAND.1 for each
/// subcommand (nested ones as flowdar-import-uftrace.1).
#[derive(Debug, Args)]
pub struct ManArgs {
    pub dir: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "flowdar", &mut std::io::stdout());
    Ok(())
}

pub fn man(args: ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let mut cmd = super::Cli::command();
    cmd.build();
    let mut written = vec![render(&cmd, "flowdar", &args.dir)?];
    pages(&cmd, "flowdar", &args.dir, &mut written)?;
    println!(
        "wrote {} man pages to {}",
        written.len(),
        args.dir.display()
    );
    Ok(())
}

/// A page for each visible subcommand of `cmd`, recursively.
fn pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    out: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    // `help` is clap's own, added by build(): no page of its own.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let page = format!("{name}-{}", sub.get_name());
        let named = sub.clone().name(page.clone());
        out.push(render(&named, &page, dir)?);
        pages(sub, &page, dir, out)?;
    }
    Ok(())
}

fn render(cmd: &clap::Command, page: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{page}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf)?;
    std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
