//! Maps errors from anywhere in vfioctl to one line and a documented exit status.

use crate::cli::exit::ExitStatus;
use crate::engine::plan::PlanError;
use crate::engine::run::{ApplyFailed, NotPrivileged};
use crate::host::config::ConfigError;
use crate::host::libvirt::LibvirtError;
use crate::host::modules::ModuleError;
use crate::host::state::StateError;
use crate::host::sysfs::InventoryError;
use crate::integrations::nova::NovaError;
use crate::model::address::AddressError;
use crate::model::declaration::DeclareError;
use crate::model::{NoMatch, SelectorError};

/// The exit status for an error: the first cause in the chain that vfioctl
/// classifies decides; anything else is a plain failure.
pub fn exit_status(err: &anyhow::Error) -> ExitStatus {
    for cause in err.chain() {
        if cause.is::<SelectorError>()
            || cause.is::<AddressError>()
            || cause.is::<Ambiguous>()
            || cause.is::<DeclareError>()
            || cause.is::<NovaError>()
            || cause.is::<NeedsConnect>()
            || cause.is::<MissingAddress>()
        {
            return ExitStatus::Usage;
        }
        if cause.is::<NoMatch>() || cause.is::<NotDeclared>() || cause.is::<NothingToConfigure>() {
            return ExitStatus::NotFound;
        }
        if let Some(InventoryError::NoPciSysfs(_)) = cause.downcast_ref::<InventoryError>() {
            return ExitStatus::Environment;
        }
        if let Some(e) = cause.downcast_ref::<PlanError>() {
            return match e {
                PlanError::Refused(_) => ExitStatus::Refused,
                PlanError::IommuOff(_) => ExitStatus::Environment,
            };
        }
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            return match e {
                ConfigError::Io { .. } => ExitStatus::Failed,
                ConfigError::HandWritten { .. } => ExitStatus::Refused,
                _ => ExitStatus::Config,
            };
        }
        if cause.is::<NotOwned>() {
            return ExitStatus::Refused;
        }
        if let Some(e) = cause.downcast_ref::<LibvirtError>() {
            return match e {
                LibvirtError::Unreachable { .. } | LibvirtError::Timeout { .. } => {
                    ExitStatus::Environment
                }
                LibvirtError::Query { .. } => ExitStatus::Failed,
            };
        }
        if cause.is::<ModuleError>() {
            return ExitStatus::Environment;
        }
        if let Some(StateError::Busy { .. }) = cause.downcast_ref::<StateError>() {
            return ExitStatus::Busy;
        }
        if cause.is::<NotPrivileged>() {
            return ExitStatus::NoPermission;
        }
        if let Some(e) = cause.downcast_ref::<ApplyFailed>() {
            return if e.rollback_failed {
                ExitStatus::Inconsistent
            } else {
                ExitStatus::Failed
            };
        }
    }
    ExitStatus::Failed
}

/// The error and its causes on one line: `outer: inner: os error`.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}

// Errors the thin commands raise themselves (no stage owns them).

/// `udev-hook` run without a device (no argument, no PCI_SLOT_NAME).
#[derive(Debug, thiserror::Error)]
#[error("udev-hook needs the device address (udev passes $kernel)")]
pub struct MissingAddress;

/// `nodedev` was asked about a host tree under `--root` without a URI for its libvirt.
#[derive(Debug, thiserror::Error)]
#[error("nodedev compares libvirt with sysfs, but {0}: pass --connect URI (e.g. test:///abs/path/node.xml, qemu+ssh://HOST/system)")]
pub struct NeedsConnect(pub String);

/// Nothing to configure: the default selection came up empty, or only bridges were selected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NothingToConfigure(pub String);

/// A selector given to `persist remove` that names no declaration.
#[derive(Debug, thiserror::Error)]
#[error("selector '{0}' names no declaration (see vfioctl persist list)")]
pub struct NotDeclared(pub String);

/// A selector given where exactly one device is needed matched several.
#[derive(Debug, thiserror::Error)]
#[error("selector '{selector}' matches {count} functions ({first}, ...); name one by its address")]
pub struct Ambiguous {
    pub selector: String,
    pub count: usize,
    pub first: String,
}

/// A file in the way that vfioctl did not write.
#[derive(Debug, thiserror::Error)]
#[error("{0} exists and was not written by vfioctl; move it aside or merge it by hand")]
pub struct NotOwned(pub String);
