//! The side-effecting edge: every read and write of host state,
//! all under one `HostRoot`.

pub mod baseline;
pub mod config;
pub mod health;
pub mod hostfacts;
pub mod kernel;
pub mod libvirt;
pub mod modules;
mod proc_walk;
pub mod programs;
pub mod reset;
pub mod root;
pub mod state;
pub mod survey;
pub mod sysfs;
pub mod udev;
pub mod usage;
pub mod usage_net;
mod usage_walk;
pub mod vms;

pub use root::{HostIoError, HostRoot};
