//! Resolving probe requests against a live process: which file each target
//! names in its memory map, which functions a name or glob matches there,
//! and the file offset of each.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use flowdar_trace::TraceProbe;

use super::{config::is_glob, locate, MappedFile, ProbeRequest, ProcMaps};
use crate::symbols::{ElfSymbols, SymbolError};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot read the memory map of PID {pid}")]
    Maps { pid: u32, source: std::io::Error },
    #[error("PID {pid} ({exe}) maps no file named `{target}`{}", candidates_hint(.candidates))]
    TargetNotMapped {
        pid: u32,
        exe: String,
        target: String,
        candidates: Vec<String>,
    },
    #[error("could not resolve {function} in {path}: no such function ({searched}){}", nearest_hint(.nearest))]
    FunctionNotFound {
        function: String,
        path: PathBuf,
        searched: String,
        nearest: Vec<String>,
    },
    #[error("{function} exists in {path} only inlined into its callers (DWARF from {debug}): there is no code of its own to attach to")]
    Inlined {
        function: String,
        path: PathBuf,
        debug: String,
    },
    #[error("no system call `{name}` can be watched (target kernel: {known})")]
    UnknownSyscall { name: String, known: String },
    #[error("{pattern} matches no function in {path} ({searched})")]
    NoMatch {
        pattern: String,
        path: PathBuf,
        searched: String,
    },
    #[error("{function} in {path} lies outside every loadable segment (address {address:#x})")]
    NoFileOffset {
        function: String,
        path: PathBuf,
        address: u64,
    },
    /// A file's symbols could not be read; `path` is the file as the
    /// target sees it (the error, kept once per file and shared by every
    /// request for it, names the path it was read through).
    #[error("{path}")]
    Symbols {
        path: PathBuf,
        #[source]
        source: std::sync::Arc<SymbolError>,
    },
}

fn candidates_hint(c: &[String]) -> String {
    if c.is_empty() {
        String::new()
    } else {
        format!("; it maps: {}", c.join(", "))
    }
}

fn nearest_hint(n: &[String]) -> String {
    if n.is_empty() {
        String::new()
    } else {
        format!("; nearest: {}", n.join(", "))
    }
}

/// A probe ready to attach: the row of the trace's probe table it will be
/// (the format's own type, `flowdar_trace::TraceProbe`: the file format is
/// defined there alone), as the resolver made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedProbe(TraceProbe);

impl ResolvedProbe {
    pub fn new(probe: TraceProbe) -> Self {
        Self(probe)
    }

    /// The probe table row a trace file stores for this probe.
    pub fn trace_probe(&self) -> &TraceProbe {
        &self.0
    }

    /// The same probe at another index of the probe table (its cookie).
    pub fn with_id(mut self, id: u32) -> Self {
        self.0.id = id;
        self
    }
}

impl std::ops::Deref for ResolvedProbe {
    type Target = TraceProbe;

    fn deref(&self) -> &TraceProbe {
        &self.0
    }
}

impl From<TraceProbe> for ResolvedProbe {
    fn from(probe: TraceProbe) -> Self {
        Self(probe)
    }
}

impl From<ResolvedProbe> for TraceProbe {
    fn from(p: ResolvedProbe) -> Self {
        p.0
    }
}

/// Everything that resolved, and why the rest did not.
#[derive(Debug, Default)]
pub struct Resolution {
    pub probes: Vec<ResolvedProbe>,
    pub failures: Vec<(ProbeRequest, ResolveError)>,
    /// Each target named by the requests, the file it matched and why.
    pub targets: Vec<TargetMatch>,
}

/// A target, the file it matched in the process, and why that file.
pub type TargetMatch = (String, PathBuf, String);

/// Resolves every request against process `pid`; the first request that
/// cannot be resolved is the error. Duplicates collapse into one probe.
pub fn resolve(
    pid: u32,
    requests: &[ProbeRequest],
    debug_root: &Path,
) -> Result<Vec<ResolvedProbe>, ResolveError> {
    resolve_with_targets(pid, requests, debug_root).map(|(probes, _)| probes)
}

/// [`resolve`], also returning each target's file and why it matched (as
/// in [`Resolution::targets`]), for commands that say so.
pub fn resolve_with_targets(
    pid: u32,
    requests: &[ProbeRequest],
    debug_root: &Path,
) -> Result<(Vec<ResolvedProbe>, Vec<TargetMatch>), ResolveError> {
    let maps = ProcMaps::read(pid).map_err(|source| ResolveError::Maps { pid, source })?;
    let mut r = resolve_all(&maps, requests, debug_root);
    match r.failures.is_empty() {
        true => Ok((r.probes, r.targets)),
        false => Err(r.failures.swap_remove(0).1),
    }
}

/// Resolves what can be resolved on an already-read memory map; ids follow
/// the request order.
/// Separate debug files are looked for under `debug_root` (normally
/// `/usr/lib/debug`).
pub fn resolve_all(maps: &ProcMaps, requests: &[ProbeRequest], debug_root: &Path) -> Resolution {
    let mut elves = Elves::new();
    let mut out = Resolution::default();
    for req in requests {
        if req.target == super::KERNEL_TARGET {
            resolve_syscall(req, &mut out);
            continue;
        }
        if is_glob(&req.target) && !req.target.contains('/') {
            resolve_in_every(maps, req, debug_root, &mut elves, &mut out);
            continue;
        }
        // A target found once (maybe by reading symbols) is not looked for again.
        let known = out
            .targets
            .iter()
            .find(|(t, _, _)| *t == req.target)
            .and_then(|(_, path, _)| maps.files.iter().find(|f| f.path == *path));
        if let Some(file) = known {
            if let Err(e) = resolve_in(file, req, debug_root, &mut elves, &mut out) {
                out.failures.push((req.clone(), e));
            }
            continue;
        }
        let file = match locate(maps, req) {
            Ok(found) => {
                if !out.targets.iter().any(|(t, _, _)| *t == req.target) {
                    out.targets
                        .push((req.target.clone(), found.file.path.clone(), found.why));
                }
                found.file
            }
            Err(candidates) => {
                let err = ResolveError::TargetNotMapped {
                    pid: maps.pid,
                    exe: maps
                        .executable()
                        .map_or_else(|| "?".into(), |f| f.path.display().to_string()),
                    target: req.target.clone(),
                    candidates: if candidates.is_empty() {
                        maps.files
                            .iter()
                            .filter_map(|f| f.path.file_name()?.to_str().map(String::from))
                            .collect()
                    } else {
                        candidates
                            .iter()
                            .map(|f| f.path.display().to_string())
                            .collect()
                    },
                };
                out.failures.push((req.clone(), err));
                continue;
            }
        };
        if let Err(e) = resolve_in(file, req, debug_root, &mut elves, &mut out) {
            out.failures.push((req.clone(), e));
        }
    }
    out
}

/// A system call (`target = "kernel"`): a probe on the kernel's syscall
/// tracepoints, numbered for this architecture.
fn resolve_syscall(req: &ProbeRequest, out: &mut Resolution) {
    let Some((nr, _)) = super::syscall_lookup(&req.function) else {
        let err = ResolveError::UnknownSyscall {
            name: req.function.clone(),
            known: super::syscalls::names().join(", "),
        };
        out.failures.push((req.clone(), err));
        return;
    };
    if out
        .probes
        .iter()
        .any(|p| p.is_syscall() && p.address == u64::from(nr))
    {
        return;
    }
    let id = out.probes.len() as u32;
    let probe = TraceProbe::syscall(id, &req.function, nr, req.capture_for(&req.function));
    out.probes.push(ResolvedProbe::new(probe));
}

/// A glob target (`mod_*`): every mapped file whose name matches it and
/// that has full symbols (a symbol table, or a debug file found for it),
/// for the functions it has that match. Where symbols exist, a module's
/// internals can be probed; a stripped module's exported functions are its
/// interface, named by explicit probes, so stripped files are skipped, as
/// are files where nothing matches: the glob asks for what is there.
fn resolve_in_every(
    maps: &ProcMaps,
    req: &ProbeRequest,
    debug_root: &Path,
    elves: &mut Elves,
    out: &mut Resolution,
) {
    for file in &maps.files {
        let name = file.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !super::glob_matches(&req.target, name) {
            continue;
        }
        let symbolised = matches!(
            elves_entry(elves, file, debug_root),
            Ok(syms) if syms.has_symtab || syms.debug_file.is_some()
        );
        if !symbolised {
            continue;
        }
        let before = out.probes.len();
        // NoMatch and unreadable files: nothing there to descend into.
        let _ = resolve_in(file, req, debug_root, elves, out);
        if out.probes.len() > before && !out.targets.iter().any(|(_, p, _)| *p == file.path) {
            out.targets.push((
                req.target.clone(),
                file.path.clone(),
                "glob, has symbols".into(),
            ));
        }
    }
}

/// Symbol tables read so far, by path (a file is read once per resolution).
type Elves = HashMap<PathBuf, Result<ElfSymbols, std::sync::Arc<SymbolError>>>;

/// The symbols of `file`, read on first use.
fn elves_entry<'e>(
    elves: &'e mut Elves,
    file: &MappedFile,
    debug_root: &Path,
) -> &'e Result<ElfSymbols, std::sync::Arc<SymbolError>> {
    elves.entry(file.path.clone()).or_insert_with(|| {
        ElfSymbols::read_with_debug_root(&file.host_path, debug_root).map_err(std::sync::Arc::new)
    })
}

/// Resolves one request's functions in the file its target matched.
fn resolve_in(
    file: &MappedFile,
    req: &ProbeRequest,
    debug_root: &Path,
    elves: &mut Elves,
    out: &mut Resolution,
) -> Result<(), ResolveError> {
    let syms = match elves_entry(elves, file, debug_root) {
        Ok(s) => s,
        Err(e) => {
            return Err(ResolveError::Symbols {
                path: file.path.clone(),
                source: e.clone(),
            })
        }
    };
    let searched = || {
        if syms.has_symtab || syms.debug_file.is_some() {
            format!("{} functions searched", syms.functions.len())
        } else {
            let exported = syms.functions.values().filter(|f| f.exported).count();
            format!(
                "the binary is stripped and no debug file was found; {exported} exported functions were searched"
            )
        }
    };
    let names: Vec<&str> = if is_glob(&req.function) {
        let mut names: Vec<&str> = syms
            .functions
            .keys()
            .map(String::as_str)
            .filter(|n| super::glob_matches(&req.function, n) && !req.excludes(n))
            .collect();
        names.sort_unstable();
        if names.is_empty() {
            let err = ResolveError::NoMatch {
                pattern: req.function.clone(),
                path: file.path.clone(),
                searched: searched(),
            };
            return Err(err);
        }
        names
    } else if syms.functions.contains_key(&req.function) {
        vec![req.function.as_str()]
    } else if syms.inlined_only.contains(&req.function) {
        let err = ResolveError::Inlined {
            function: req.function.clone(),
            path: file.path.clone(),
            debug: syms
                .debug_file
                .as_ref()
                .map_or_else(|| "?".into(), |d| d.display().to_string()),
        };
        return Err(err);
    } else {
        let err = ResolveError::FunctionNotFound {
            function: req.function.clone(),
            path: file.path.clone(),
            searched: searched(),
            nearest: syms
                .nearest(&req.function, 3)
                .into_iter()
                .map(String::from)
                .collect(),
        };
        return Err(err);
    };
    for name in names {
        let sym = &syms.functions[name];
        let Some(file_offset) = syms.file_offset(sym) else {
            let err = ResolveError::NoFileOffset {
                function: name.into(),
                path: file.path.clone(),
                address: sym.address,
            };
            out.failures.push((req.clone(), err));
            continue;
        };
        if out
            .probes
            .iter()
            .any(|p| p.path == file.path && p.file_offset == file_offset)
        {
            continue;
        }
        let mut capture = req.capture_for(name);
        // With DWARF, arguments past the function's parameters are
        // register leftovers: do not keep them (they cost trace bytes).
        if sym.source.is_some() {
            capture.args = capture.args.min(sym.params.len().min(3) as u8);
        }
        out.probes.push(ResolvedProbe::new(TraceProbe {
            id: out.probes.len() as u32,
            function: name.into(),
            path: file.path.clone(),
            attach_path: file.host_path.clone(),
            address: sym.address,
            file_offset,
            capture,
            optional: is_glob(&req.function),
            source: sym.source.clone(),
            params: sym.params.clone(),
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::symbols::DEBUG_ROOT;

    fn self_maps() -> ProcMaps {
        ProcMaps::read(std::process::id()).unwrap()
    }

    fn exe() -> String {
        std::env::current_exe().unwrap().display().to_string()
    }

    #[test]
    fn resolves_a_function_of_our_own_binary() {
        let req = ProbeRequest::new(exe(), "main");
        let probes = resolve_all(&self_maps(), &[req.clone(), req], Path::new(DEBUG_ROOT)).probes;
        assert_eq!(probes.len(), 1, "duplicates collapse");
        assert_eq!(probes[0].id, 0);
        assert!(probes[0].file_offset > 0);
    }

    #[test]
    fn globs_expand_and_exclusions_apply() {
        let mut req = ProbeRequest::new("libc.so.6", "pthread_mutex_*lock");
        req.exclude = vec!["pthread_mutex_trylock".into()];
        let r = resolve_all(&self_maps(), &[req], Path::new(DEBUG_ROOT));
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        let names: Vec<&str> = r.probes.iter().map(|p| p.function.as_str()).collect();
        assert!(
            names.contains(&"pthread_mutex_lock") && names.contains(&"pthread_mutex_unlock"),
            "{names:?}"
        );
        assert!(!names.contains(&"pthread_mutex_trylock"));
        let r = resolve_all(
            &self_maps(),
            &[ProbeRequest::new("libc.so.6", "no_such_*")],
            Path::new(DEBUG_ROOT),
        );
        assert!(
            r.failures[0]
                .1
                .to_string()
                .starts_with("no_such_* matches no function in "),
            "{}",
            r.failures[0].1
        );
    }

    #[test]
    fn missing_function_names_the_nearest() {
        let err = resolve_all(
            &self_maps(),
            &[ProbeRequest::new(exe(), "mian")],
            Path::new(DEBUG_ROOT),
        )
        .failures
        .remove(0)
        .1
        .to_string();
        assert!(err.starts_with("could not resolve mian in "), "{err}");
        assert!(err.contains("nearest: main"), "{err}");
    }

    #[test]
    fn unmapped_target_lists_what_is_mapped() {
        let err = resolve_all(
            &self_maps(),
            &[ProbeRequest::new("libnotthere", "f")],
            Path::new(DEBUG_ROOT),
        )
        .failures
        .remove(0)
        .1
        .to_string();
        assert!(
            err.contains("maps no file named `libnotthere`; it maps: "),
            "{err}"
        );
        assert!(err.contains("libc.so.6"), "{err}");
    }

    #[test]
    fn every_failure_is_reported_with_what_resolved() {
        let reqs = [
            ProbeRequest::new(exe(), "main"),
            ProbeRequest::new(exe(), "mian"),
            ProbeRequest::new("libx", "f"),
        ];
        let r = resolve_all(&self_maps(), &reqs, Path::new(DEBUG_ROOT));
        assert_eq!(r.probes.len(), 1);
        assert_eq!(r.failures.len(), 2);
    }
}
