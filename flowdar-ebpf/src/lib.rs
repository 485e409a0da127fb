//! Empty library target: lets `flowdar-user` declare a build-dependency on
//! this crate so cargo rebuilds the kernel programs when they change.
#![no_std]
