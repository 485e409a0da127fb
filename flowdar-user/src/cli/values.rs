//! Command-line spellings of library enums: the library types stay free of
//! clap, and each value converts to its library type here.
use clap::ValueEnum;

use crate::{render::Lanes, server::Mpm};

/// `--by` values of `render`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LanesArg {
    Component,
    Thread,
}

impl From<LanesArg> for Lanes {
    fn from(v: LanesArg) -> Self {
        match v {
            LanesArg::Component => Lanes::Component,
            LanesArg::Thread => Lanes::Thread,
        }
    }
}

/// `--mpm` values of `demo` and `experiment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MpmArg {
    Event,
    Worker,
    Prefork,
}

impl From<MpmArg> for Mpm {
    fn from(v: MpmArg) -> Self {
        match v {
            MpmArg::Event => Mpm::Event,
            MpmArg::Worker => Mpm::Worker,
            MpmArg::Prefork => Mpm::Prefork,
        }
    }
}
