//! Shared test support: the fake host builder, its topologies, golden files.
#![allow(dead_code)]

pub mod cli;
pub mod fakehost;
pub mod golden;
pub mod killpoint;
pub mod silent;
pub mod simkernel;
pub mod topologies;
