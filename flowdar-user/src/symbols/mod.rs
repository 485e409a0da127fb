//! ELF and DWARF symbolisation: function symbols of a binary or shared
//! library (`.symtab`, `.dynsym`), DWARF from the file or its separate debug
//! file (static functions, source lines, parameter names), the file offsets
//! uprobes attach to, and demangled names for display.
mod debuglink;
mod dwarf;
mod elf;

pub use debuglink::{build_id, DEBUG_ROOT};
pub use elf::{vaddr_to_file_offset, ElfSymbols, FunctionSymbol, LoadSegment, SymbolError};

/// A symbol as people read it: Rust (legacy and v0) and C++ names
/// demangled, C names unchanged.
pub fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(name) {
            if let Ok(d) = sym.demangle(&cpp_demangle::DemangleOptions::default()) {
                return d;
            }
        }
    }
    name.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn demangles_rust_and_cpp_and_leaves_c_alone() {
        assert_eq!(
            super::demangle("_ZN4core3fmt5write17h0123456789abcdefE"),
            "core::fmt::write"
        );
        assert_eq!(super::demangle("_ZN3foo3barEi"), "foo::bar(int)");
        assert_eq!(super::demangle("ap_read_request"), "ap_read_request");
    }
}
