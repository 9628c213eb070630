//! The side-effecting edge: every read (and, later, write) of host state,
//! all under one `HostRoot`.

pub mod root;
pub mod sysfs;

pub use root::{HostIoError, HostRoot};
