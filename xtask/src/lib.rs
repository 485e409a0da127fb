//! What xtask's binary and other crates' tests share: the commands shown in
//! the docs ([`doc_commands`]), parsed by tests against the real command lines,
//! and the figures the docs quote twice ([`doc_figures`]), checked alike.
pub mod doc_commands;
pub mod doc_figures;
