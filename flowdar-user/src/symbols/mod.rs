//! ELF and DWARF symbolisation: function symbols of a binary or shared
//! library (`.symtab`, `.dynsym`), DWARF from the file or its separate debug
//! file (static functions, source lines, parameter names), the file offsets
//! uprobes attach to, and demangled names for display.
mod debuglink;
mod dwarf;
mod elf;

pub use debuglink::{build_id, DEBUG_ROOT};
pub use elf::{vaddr_to_file_offset, ElfSymbols, FunctionSymbol, LoadSegment, SymbolError};

/// Symbols as people read them (the trace crate owns the one demangler).
pub use flowdar_trace::demangle;
