//! Naming uftrace's run-time addresses: a session's `sid-<SID>.map` (its
//! executable mappings) and uftrace's own `<module>.sym` symbol tables
//! (`ADDR TYPE NAME` lines, sorted; `?` entries mark an end), so the
//! converter needs none of the recorded binaries.
use std::{collections::HashMap, path::Path};

use super::{data::FEAT_SYM_REL_ADDR, UftraceError};

/// One executable mapping of a session.
#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    path: String,
}

/// A symbol table: (address, type, name), by address.
#[derive(Debug, Default)]
struct SymTable {
    syms: Vec<(u64, char, String)>,
}

impl SymTable {
    fn parse(text: &str) -> Self {
        let mut syms: Vec<(u64, char, String)> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut it = l.splitn(3, ' ');
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let kind = it.next()?.chars().next()?;
                Some((addr, kind, it.next()?.trim().to_string()))
            })
            .collect();
        syms.sort_by_key(|s| s.0);
        Self { syms }
    }

    /// The symbol whose range holds `addr`.
    fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|s| s.0 <= addr);
        let (_, kind, name) = self.syms.get(i.checked_sub(1)?)?;
        (*kind != '?').then_some(name.as_str())
    }
}

/// A function as the converter names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Function {
    /// The module's path as mapped in the recorded process.
    pub module: String,
    pub name: String,
    /// Address in the module's symbol table.
    pub address: u64,
}

/// Resolves addresses for every session of a recording (cached per session
/// and module).
pub struct Symbolizer<'a> {
    dir: &'a Path,
    relative: bool,
    maps: HashMap<String, Vec<Mapping>>,
    tables: HashMap<String, SymTable>,
}

impl<'a> Symbolizer<'a> {
    pub fn new(dir: &'a Path, features: u64) -> Self {
        Self {
            dir,
            relative: features & FEAT_SYM_REL_ADDR != 0,
            maps: HashMap::new(),
            tables: HashMap::new(),
        }
    }

    fn mappings(&mut self, sid: &str) -> Result<&[Mapping], UftraceError> {
        if !self.maps.contains_key(sid) {
            let path = self.dir.join(format!("sid-{sid}.map"));
            let text = std::fs::read_to_string(&path)
                .map_err(|source| UftraceError::Io { path, source })?;
            let maps = text
                .lines()
                .filter_map(|l| {
                    let mut it = l.split_whitespace();
                    let (range, perms) = (it.next()?, it.next()?);
                    let path = it.nth(3)?.to_string();
                    let (a, b) = range.split_once('-')?;
                    if !perms.contains('x') || !path.starts_with('/') {
                        return None;
                    }
                    Some(Mapping {
                        start: u64::from_str_radix(a, 16).ok()?,
                        end: u64::from_str_radix(b, 16).ok()?,
                        path,
                    })
                })
                .collect();
            self.maps.insert(sid.to_string(), maps);
        }
        Ok(&self.maps[sid])
    }

    /// Names the function at run-time address `addr` in session `sid`. An
    /// address outside every mapping, or with no symbol, keeps its hex form.
    pub fn resolve(&mut self, sid: &str, addr: u64) -> Result<Function, UftraceError> {
        let relative = self.relative;
        let Some(map) = self
            .mappings(sid)?
            .iter()
            .find(|m| m.start <= addr && addr < m.end)
            .cloned()
        else {
            return Ok(Function {
                module: String::new(),
                name: format!("{addr:#x}"),
                address: addr,
            });
        };
        let base = Path::new(&map.path)
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        if !self.tables.contains_key(&base) {
            // A module uftrace wrote no table for has no names: not an error.
            let text =
                std::fs::read_to_string(self.dir.join(format!("{base}.sym"))).unwrap_or_default();
            self.tables.insert(base.clone(), SymTable::parse(&text));
        }
        let local = if relative { addr - map.start } else { addr };
        let name = self.tables[&base]
            .lookup(local)
            .map_or_else(|| format!("{base}+{local:#x}"), str::to_string);
        Ok(Function {
            module: map.path,
            name,
            address: local,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbol_covers_up_to_the_next_and_end_markers_stop_it() {
        let t = SymTable::parse(
            "# symbols: 3\n0000000000001040 P __monstartup\n0000000000001050 P strtol\n00000000000011f3 t leaf\n0000000000001300 ? __sym_end\n",
        );
        assert_eq!(t.lookup(0x1040), Some("__monstartup"));
        assert_eq!(t.lookup(0x104f), Some("__monstartup"));
        assert_eq!(t.lookup(0x11f3), Some("leaf"));
        assert_eq!(t.lookup(0x1300), None);
        assert_eq!(t.lookup(0x1000), None);
    }
}
