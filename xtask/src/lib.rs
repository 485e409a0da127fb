//! What xtask's binary and other crates' tests share: the commands shown in
//! the docs ([`doc_commands`]), parsed by tests against the real command lines.
pub mod doc_commands;
