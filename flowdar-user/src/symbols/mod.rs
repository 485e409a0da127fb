//! ELF symbolisation: reading function symbols from a binary or shared
//! library and turning their virtual addresses into the file offsets that
//! uprobes attach to.
mod elf;

pub use elf::{vaddr_to_file_offset, ElfSymbols, FunctionSymbol, LoadSegment, SymbolError};
