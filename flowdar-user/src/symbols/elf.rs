//! Function symbols of one ELF file (`.symtab` and `.dynsym`) via `object`.
use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use object::{elf, Object, ObjectSegment, ObjectSymbol, SymbolKind};

use super::{debuglink, dwarf};

/// Errors reading an ELF file's symbols.
#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file we can read")]
    Parse {
        path: PathBuf,
        source: object::Error,
    },
    #[error("{path}: bad DWARF")]
    Dwarf { path: PathBuf, source: gimli::Error },
}

/// A defined function symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSymbol {
    pub name: String,
    /// Link-time virtual address.
    pub address: u64,
    pub size: u64,
    /// True when the symbol comes from `.dynsym` (exported).
    pub exported: bool,
    /// `file:line` of the definition, from DWARF.
    pub source: Option<String>,
    /// Parameter names, from DWARF.
    pub params: Vec<String>,
}

/// One `PT_LOAD` segment: what maps a virtual address to a file offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub executable: bool,
}

/// The functions of one ELF file, by name.
#[derive(Debug, Clone)]
pub struct ElfSymbols {
    pub path: PathBuf,
    pub functions: HashMap<String, FunctionSymbol>,
    pub segments: Vec<LoadSegment>,
    /// True when the file has a full `.symtab` (not stripped).
    pub has_symtab: bool,
    /// Where the DWARF came from (the file itself or its debug file).
    pub debug_file: Option<PathBuf>,
    /// Functions DWARF knows only as inlined copies: nothing to attach to.
    pub inlined_only: std::collections::HashSet<String>,
}

impl ElfSymbols {
    /// Reads the function symbols of the ELF file at `path`, with DWARF
    /// from the file or its separate debug file under `/usr/lib/debug`.
    pub fn read(path: &Path) -> Result<Self, SymbolError> {
        Self::read_with_debug_root(path, Path::new(debuglink::DEBUG_ROOT))
    }

    /// [`read`](Self::read), looking for debug files under `debug_root`.
    pub fn read_with_debug_root(path: &Path, debug_root: &Path) -> Result<Self, SymbolError> {
        let data = fs::read(path).map_err(|source| SymbolError::Read {
            path: path.into(),
            source,
        })?;
        let mut syms = Self::parse(path, &data)?;
        let file = object::File::parse(&*data).map_err(|source| SymbolError::Parse {
            path: path.into(),
            source,
        })?;
        let (dwarf_fns, debug_file) = if file.section_by_name(".debug_info").is_some() {
            (dwarf::read(&file), Some(path.to_path_buf()))
        } else if let Some(dbg) = debuglink::find(path, &file, debug_root) {
            let dbg_data = fs::read(&dbg).map_err(|source| SymbolError::Read {
                path: dbg.clone(),
                source,
            })?;
            let dbg_file =
                object::File::parse(&*dbg_data).map_err(|source| SymbolError::Parse {
                    path: dbg.clone(),
                    source,
                })?;
            (dwarf::read(&dbg_file), Some(dbg))
        } else {
            (Ok(Default::default()), None)
        };
        let dwarf_fns = dwarf_fns.map_err(|source| SymbolError::Dwarf {
            path: debug_file.clone().unwrap_or_else(|| path.into()),
            source,
        })?;
        syms.merge_dwarf(dwarf_fns);
        syms.debug_file = debug_file;
        Ok(syms)
    }

    /// Adds DWARF's functions (statics a stripped binary lost) and their
    /// source lines and parameters to the symbol-table ones.
    fn merge_dwarf(&mut self, fns: dwarf::DwarfFunctions) {
        for (name, f) in fns {
            match (self.functions.get_mut(&name), f.address) {
                (Some(sym), _) => {
                    sym.source = f.source;
                    sym.params = f.params;
                }
                (None, Some(address)) => {
                    self.functions.insert(
                        name.clone(),
                        FunctionSymbol {
                            name,
                            address,
                            size: 0,
                            exported: false,
                            source: f.source,
                            params: f.params,
                        },
                    );
                }
                (None, None) => {
                    self.inlined_only.insert(name);
                }
            }
        }
    }

    /// Parses ELF bytes; `path` is only used in messages.
    pub fn parse(path: &Path, data: &[u8]) -> Result<Self, SymbolError> {
        let file = object::File::parse(data).map_err(|source| SymbolError::Parse {
            path: path.into(),
            source,
        })?;
        let segments = load_segments(&file);
        let mut functions = HashMap::new();
        let mut add = |sym: object::Symbol<'_, '_>, exported: bool| {
            if sym.kind() != SymbolKind::Text || sym.is_undefined() || sym.address() == 0 {
                return;
            }
            let Ok(name) = sym.name() else { return };
            // Versioned dynamic names ("f@@V1") are reported bare by `object`.
            functions
                .entry(name.to_string())
                .and_modify(|f: &mut FunctionSymbol| f.exported |= exported)
                .or_insert_with(|| FunctionSymbol {
                    name: name.to_string(),
                    address: sym.address(),
                    size: sym.size(),
                    exported,
                    source: None,
                    params: Vec::new(),
                });
        };
        for sym in file.dynamic_symbols() {
            add(sym, true);
        }
        let mut has_symtab = false;
        for sym in file.symbols() {
            has_symtab = true;
            add(sym, false);
        }
        Ok(Self {
            path: path.into(),
            functions,
            segments,
            has_symtab,
            debug_file: None,
            inlined_only: Default::default(),
        })
    }

    /// Whether the ELF file at `path` defines a function `name` (dynamic or
    /// static symbol): how a target is recognised by what it is (the server
    /// binary defines `ap_read_request`, whatever it is called).
    pub fn defines(path: &Path, name: &str) -> bool {
        let Ok(data) = fs::read(path) else {
            return false;
        };
        let Ok(file) = object::File::parse(&*data) else {
            return false;
        };
        let is_it = |sym: object::Symbol<'_, '_>| {
            sym.kind() == SymbolKind::Text && !sym.is_undefined() && sym.name() == Ok(name)
        };
        file.dynamic_symbols().any(is_it) || file.symbols().any(is_it)
    }

    /// The file offset of a function, for attaching a uprobe to it.
    pub fn file_offset(&self, f: &FunctionSymbol) -> Option<u64> {
        vaddr_to_file_offset(&self.segments, f.address)
    }

    /// Up to `n` function names closest to `name` (for "did you mean").
    pub fn nearest(&self, name: &str, n: usize) -> Vec<&str> {
        let mut scored: Vec<(f64, &str)> = self
            .functions
            .keys()
            .map(|k| (strsim::jaro_winkler(name, k), k.as_str()))
            .filter(|(s, _)| *s > 0.8)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        scored.into_iter().take(n).map(|(_, k)| k).collect()
    }
}

fn load_segments(file: &object::File<'_>) -> Vec<LoadSegment> {
    let mut out = Vec::new();
    for seg in file.segments() {
        let (file_offset, file_size) = seg.file_range();
        let flags = seg.flags();
        let executable =
            matches!(flags, object::SegmentFlags::Elf { p_flags } if p_flags & elf::PF_X != 0);
        out.push(LoadSegment {
            vaddr: seg.address(),
            file_offset,
            file_size,
            executable,
        });
    }
    out
}

/// Maps a link-time virtual address to its offset in the file, using the
/// `PT_LOAD` segment that contains it: `offset = va - p_vaddr + p_offset`.
pub fn vaddr_to_file_offset(segments: &[LoadSegment], vaddr: u64) -> Option<u64> {
    segments
        .iter()
        .find(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.file_size)
        .map(|s| vaddr - s.vaddr + s.file_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_uses_the_containing_segment() {
        // The layout of Debian's /usr/sbin/apache2 2.4.x: text at 0x39000,
        // data mapped one page above its file offset.
        let segs = [
            LoadSegment {
                vaddr: 0,
                file_offset: 0,
                file_size: 0x38138,
                executable: false,
            },
            LoadSegment {
                vaddr: 0x39000,
                file_offset: 0x39000,
                file_size: 0x4e559,
                executable: true,
            },
            LoadSegment {
                vaddr: 0xacc30,
                file_offset: 0xabc30,
                file_size: 0x6c60,
                executable: false,
            },
        ];
        assert_eq!(vaddr_to_file_offset(&segs, 0x39010), Some(0x39010));
        assert_eq!(vaddr_to_file_offset(&segs, 0xacc40), Some(0xabc40));
        assert_eq!(vaddr_to_file_offset(&segs, 0x87560), None);
    }

    #[test]
    fn reads_our_own_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let syms = ElfSymbols::read(&exe).unwrap();
        assert!(syms.has_symtab);
        let main = syms.functions.get("main").expect("main in the test binary");
        let off = syms.file_offset(main).expect("main has a file offset");
        let text = syms.segments.iter().find(|s| s.executable).unwrap();
        assert!(off >= text.file_offset && off < text.file_offset + text.file_size);
    }

    #[test]
    fn garbage_is_a_parse_error() {
        let err = ElfSymbols::parse(Path::new("x"), b"not an elf").unwrap_err();
        assert!(err.to_string().starts_with("x is not an ELF file"), "{err}");
    }
}
