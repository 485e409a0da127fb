//! Resolving probe requests against a live process: which file each target
//! names in its memory map, and the file offset of each function in it.
use std::{collections::HashMap, path::PathBuf};

use serde::{Deserialize, Serialize};

use super::{ProbeRequest, ProcMaps};
use crate::symbols::{ElfSymbols, SymbolError};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot read the memory map of PID {pid}: {source}")]
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
    #[error("{function} in {path} lies outside every loadable segment (address {address:#x})")]
    NoFileOffset {
        function: String,
        path: PathBuf,
        address: u64,
    },
    #[error(transparent)]
    Symbols(#[from] SymbolError),
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

/// A probe ready to attach: the trace's probe table is made of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedProbe {
    /// Index in the probe table; the attach cookie.
    pub id: u32,
    pub function: String,
    /// The file as the target process sees it.
    pub path: PathBuf,
    /// The file reached through `/proc/PID/root` (what we attach to).
    pub attach_path: PathBuf,
    /// Link-time virtual address of the function.
    pub address: u64,
    /// Offset of the function in the file: the uprobe attach point.
    pub file_offset: u64,
    /// Leading integer arguments kept (0..=3).
    #[serde(default = "all_args")]
    pub args: u8,
}

fn all_args() -> u8 {
    flowdar_common::MAX_ARGS as u8
}

/// Resolves every request against process `pid`. Duplicates collapse into
/// one probe; ids follow the request order.
pub fn resolve(pid: u32, requests: &[ProbeRequest]) -> Result<Vec<ResolvedProbe>, ResolveError> {
    let maps = ProcMaps::read(pid).map_err(|source| ResolveError::Maps { pid, source })?;
    resolve_in(&maps, requests)
}

/// [`resolve`] on an already-read memory map.
pub fn resolve_in(
    maps: &ProcMaps,
    requests: &[ProbeRequest],
) -> Result<Vec<ResolvedProbe>, ResolveError> {
    let mut elves: HashMap<PathBuf, ElfSymbols> = HashMap::new();
    let mut out: Vec<ResolvedProbe> = Vec::new();
    for req in requests {
        let file = maps
            .find(&req.target)
            .map_err(|candidates| ResolveError::TargetNotMapped {
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
            })?;
        if !elves.contains_key(&file.path) {
            let syms = ElfSymbols::read(&file.host_path)?;
            elves.insert(file.path.clone(), syms);
        }
        let syms = &elves[&file.path];
        let Some(sym) = syms.functions.get(&req.function) else {
            let exported = syms.functions.values().filter(|f| f.exported).count();
            let searched = if syms.has_symtab {
                format!("{} functions searched", syms.functions.len())
            } else {
                format!("the binary is stripped; {exported} exported functions were searched")
            };
            return Err(ResolveError::FunctionNotFound {
                function: req.function.clone(),
                path: file.path.clone(),
                searched,
                nearest: syms
                    .nearest(&req.function, 3)
                    .into_iter()
                    .map(String::from)
                    .collect(),
            });
        };
        let file_offset = syms
            .file_offset(sym)
            .ok_or_else(|| ResolveError::NoFileOffset {
                function: req.function.clone(),
                path: file.path.clone(),
                address: sym.address,
            })?;
        if out
            .iter()
            .any(|p| p.path == file.path && p.file_offset == file_offset)
        {
            continue;
        }
        out.push(ResolvedProbe {
            id: out.len() as u32,
            function: req.function.clone(),
            path: file.path.clone(),
            attach_path: file.host_path.clone(),
            address: sym.address,
            file_offset,
            args: req.args.min(flowdar_common::MAX_ARGS as u8),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_maps() -> ProcMaps {
        ProcMaps::read(std::process::id()).unwrap()
    }

    #[test]
    fn resolves_a_function_of_our_own_binary() {
        let exe = std::env::current_exe().unwrap();
        let req = ProbeRequest::new(exe.display().to_string(), "main");
        let probes = resolve_in(&self_maps(), &[req.clone(), req]).unwrap();
        assert_eq!(probes.len(), 1, "duplicates collapse");
        assert_eq!(probes[0].id, 0);
        assert!(probes[0].file_offset > 0);
    }

    #[test]
    fn missing_function_names_the_nearest() {
        let exe = std::env::current_exe().unwrap();
        let req = ProbeRequest::new(exe.display().to_string(), "mian");
        let err = resolve_in(&self_maps(), &[req]).unwrap_err().to_string();
        assert!(err.starts_with("could not resolve mian in "), "{err}");
        assert!(err.contains("nearest: main"), "{err}");
    }

    #[test]
    fn unmapped_target_lists_what_is_mapped() {
        let req = ProbeRequest::new("libnotthere", "f");
        let err = resolve_in(&self_maps(), &[req]).unwrap_err().to_string();
        assert!(
            err.contains("maps no file named `libnotthere`; it maps: "),
            "{err}"
        );
        assert!(err.contains("libc.so.6"), "{err}");
    }
}
