//! `cargo xtask install --prefix P` as a new user would run it: the
//! installed binary is small (debug info split off, found by gdb through
//! the debuglink), runs, has a man page per subcommand that `man` renders
//! and completions bash loads; `cargo xtask uninstall` leaves no file.
//! Installs the release build `cargo xtask test` made (`--no-build`), with
//! the xtask that runs the tests (XTASK_BIN).
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The installed binary must stay below 20 MB (the unstripped build is
/// ~150 MB).
const MAX_BINARY_BYTES: u64 = 20_000_000;

fn xtask() -> PathBuf {
    std::env::var_os("XTASK_BIN")
        .map(PathBuf::from)
        .expect("XTASK_BIN is not set: run these tests with `cargo xtask test`")
}

use flowdar_tests::run_ok as ok;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Subcommands listed by `flowdar --help` (clap's `help` aside).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn install_then_uninstall_into_a_prefix() {
    let prefix = tempfile::tempdir().unwrap();
    let p = prefix.path();
    ok(Command::new(xtask())
        .args(["install", "--no-build", "--prefix"])
        .arg(p));

    let bin = p.join("bin/flowdar");
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(size < MAX_BINARY_BYTES, "{} is {size} bytes", bin.display());
    let help = text(&ok(Command::new(&bin).arg("--help")));
    let subs = subcommands(&help);
    for want in ["record", "stats", "export", "import"] {
        assert!(subs.iter().any(|s| s == want), "{want} in {subs:?}");
    }

    // Debug info: split off, named by the debuglink, found by gdb.
    let debug = p.join("bin/.debug/flowdar.debug");
    assert!(debug.is_file(), "{} missing", debug.display());
    let link = text(&ok(Command::new("readelf")
        .args(["--string-dump=.gnu_debuglink"])
        .arg(&bin)));
    assert!(link.contains("flowdar.debug"), "{link}");
    let sections = text(&ok(Command::new("readelf").arg("-S").arg(&bin)));
    assert!(
        !sections.contains(".debug_info"),
        "the binary kept its debug info"
    );
    // gdb has line numbers for a function with the debug file in place,
    // none without it: it found the file through the debuglink.
    let gdb_line = || {
        let out = Command::new("gdb")
            .args(["-nx", "-batch", "-ex", "info line flowdar::cli::run"])
            .arg(&bin)
            .output()
            .expect("run gdb (cargo xtask setup installs it)");
        text(&out)
    };
    let with = gdb_line();
    assert!(
        with.contains("src/cli/mod.rs"),
        "gdb with the debug file:\n{with}"
    );
    let aside = p.join("flowdar.debug.aside");
    std::fs::rename(&debug, &aside).unwrap();
    let without = gdb_line();
    std::fs::rename(&aside, &debug).unwrap();
    assert!(
        !without.contains("src/cli/mod.rs"),
        "gdb without the debug file:\n{without}"
    );

    // A man page per subcommand; man renders one.
    let man = p.join("share/man/man1");
    assert!(man.join("flowdar.1").is_file());
    for s in &subs {
        let page = man.join(format!("flowdar-{s}.1"));
        assert!(page.is_file(), "{} missing", page.display());
    }
    let page = ok(Command::new("man")
        .arg("-l")
        .arg(man.join("flowdar-record.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100"));
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.contains("flowdar-record") && page.contains("--pid"),
        "{page}"
    );
    // Found by name, as `man flowdar-record` finds it, nested ones too.
    for name in ["flowdar-record", "flowdar-import-uftrace"] {
        let found = text(&ok(Command::new("man")
            .args(["-w", name])
            .env("MANPATH", p.join("share/man"))));
        assert!(
            found.trim().ends_with(&format!("{name}.1")),
            "man -w {name}: {found}"
        );
    }

    // Completions for bash, zsh and fish; bash loads its own.
    let bash = p.join("share/bash-completion/completions/flowdar");
    let loaded = text(&ok(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && complete -p flowdar",
        bash.display()
    ))));
    assert!(
        loaded.contains("_flowdar") && loaded.contains("flowdar"),
        "{loaded}"
    );
    // Tab after `flowdar rec` completes to `record`, as bash would.
    let offered = text(&ok(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && COMP_WORDS=(flowdar rec) COMP_CWORD=1 COMP_LINE='flowdar rec' COMP_POINT=11 && _flowdar flowdar rec flowdar && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    ))));
    assert_eq!(offered.trim(), "record", "bash completion of `flowdar rec`");
    let zsh = std::fs::read_to_string(p.join("share/zsh/site-functions/_flowdar")).unwrap();
    assert!(
        zsh.starts_with("#compdef flowdar"),
        "{}",
        &zsh[..80.min(zsh.len())]
    );
    let fish =
        std::fs::read_to_string(p.join("share/fish/vendor_completions.d/flowdar.fish")).unwrap();
    assert!(fish.contains("complete -c flowdar"));
    for s in ["record", "import"] {
        assert!(zsh.contains(s) && fish.contains(s), "{s} completes");
    }

    ok(Command::new(xtask()).args(["uninstall", "--prefix"]).arg(p));
    let left = files_under(p);
    assert!(left.is_empty(), "left behind: {left:?}");
}
