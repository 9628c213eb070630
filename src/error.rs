//! Maps errors from anywhere in vfioctl to one line and a documented exit status.

use crate::change::{ApplyFailed, NotPrivileged};
use crate::cli::exit;
use crate::commands::nodedev::NeedsConnect;
use crate::commands::nova::NothingToConfigure;
use crate::commands::persist::NotDeclared;
use crate::commands::show::Ambiguous;
use crate::config::ConfigError;
use crate::host::libvirt::LibvirtError;
use crate::host::modules::ModuleError;
use crate::host::state::StateError;
use crate::host::sysfs::InventoryError;
use crate::model::address::AddressError;
use crate::model::declaration::DeclareError;
use crate::model::nova::NovaError;
use crate::model::plan::PlanError;
use crate::model::{NoMatch, SelectorError};

/// The exit status for an error: the first cause in the chain that vfioctl
/// classifies decides; anything else is a plain failure.
pub fn exit_status(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<SelectorError>()
            || cause.is::<AddressError>()
            || cause.is::<Ambiguous>()
            || cause.is::<DeclareError>()
            || cause.is::<NovaError>()
            || cause.is::<NeedsConnect>()
        {
            return exit::USAGE;
        }
        if cause.is::<NoMatch>() || cause.is::<NotDeclared>() || cause.is::<NothingToConfigure>() {
            return exit::NOT_FOUND;
        }
        if let Some(InventoryError::NoPciSysfs(_)) = cause.downcast_ref::<InventoryError>() {
            return exit::ENVIRONMENT;
        }
        if let Some(e) = cause.downcast_ref::<PlanError>() {
            return match e {
                PlanError::Refused(_) => exit::REFUSED,
                PlanError::IommuOff(_) => exit::ENVIRONMENT,
            };
        }
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            return match e {
                ConfigError::Io { .. } => exit::FAILED,
                _ => exit::CONFIG,
            };
        }
        if cause.is::<crate::commands::host_config::NotOwned>() {
            return exit::REFUSED;
        }
        if let Some(e) = cause.downcast_ref::<LibvirtError>() {
            return match e {
                LibvirtError::Unreachable { .. } | LibvirtError::Timeout { .. } => {
                    exit::ENVIRONMENT
                }
                LibvirtError::Query { .. } => exit::FAILED,
            };
        }
        if cause.is::<ModuleError>() {
            return exit::ENVIRONMENT;
        }
        if let Some(StateError::Busy { .. }) = cause.downcast_ref::<StateError>() {
            return exit::BUSY;
        }
        if cause.is::<NotPrivileged>() {
            return exit::NO_PERMISSION;
        }
        if let Some(e) = cause.downcast_ref::<ApplyFailed>() {
            return if e.rollback_failed {
                exit::INCONSISTENT
            } else {
                exit::FAILED
            };
        }
    }
    exit::FAILED
}

/// The error and its causes on one line: `outer: inner: os error`.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}
