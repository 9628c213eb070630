//! Maps errors from anywhere in vfioctl to one line and a documented exit status.

use crate::cli::exit::ExitStatus;
use crate::engine::enforce::AlreadyDeclared;
use crate::engine::plan::PlanError;
use crate::engine::run::{ApplyFailed, NotPrivileged};
use crate::engine::sriov::SriovError;
use crate::host::config::ConfigError;
use crate::host::libvirt::LibvirtError;
use crate::host::modules::ModuleError;
use crate::host::state::StateError;
use crate::host::sysfs::InventoryError;
use crate::integrations::nova::NovaError;
use crate::model::address::AddressError;
use crate::model::declaration::DeclareError;
use crate::model::driver::BadName;
use crate::model::fabric::StaysOnHost;
use crate::model::{NoMatch, SelectorError};

/// The exit status for an error: the first cause in the chain that vfioctl
/// classifies decides; anything else is a plain failure.
pub fn exit_status(err: &anyhow::Error) -> ExitStatus {
    for cause in err.chain() {
        if cause.is::<SelectorError>()
            || cause.is::<AddressError>()
            || cause.is::<Ambiguous>()
            || cause.is::<NovaError>()
            || cause.is::<NeedsConnect>()
            || cause.is::<MissingAddress>()
            || cause.is::<StdoutConflict>()
            || cause.is::<BadName>()
            || cause.is::<crate::model::reset::UnknownResetMethod>()
        {
            return ExitStatus::Usage;
        }
        if cause.is::<NoMatch>()
            || matches!(
                cause.downcast_ref::<DeclareError>(),
                Some(DeclareError::NoMatch(_))
            )
            || cause.is::<NotDeclared>()
            || cause.is::<NothingToConfigure>()
        {
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
        if let Some(e) = cause.downcast_ref::<SriovError>() {
            return match e {
                SriovError::Ambiguous { .. } => ExitStatus::Usage,
                SriovError::Plan(PlanError::IommuOff(_)) => ExitStatus::Environment,
                SriovError::NotPf { .. }
                | SriovError::TooMany { .. }
                | SriovError::NoPfDriver { .. }
                | SriovError::Held { .. }
                | SriovError::InterruptsPf { .. }
                | SriovError::Plan(PlanError::Refused(_)) => ExitStatus::Refused,
            };
        }
        if matches!(
            cause.downcast_ref::<DeclareError>(),
            Some(DeclareError::Bridge { .. })
        ) {
            return ExitStatus::Refused;
        }
        if cause.is::<crate::model::declaration::Conflict>() {
            return ExitStatus::Config;
        }
        if cause.is::<crate::engine::recover::RecoverError>()
            || cause.is::<crate::engine::reset::ResetError>()
            || cause.is::<crate::engine::enforce::SriovNotDeclared>()
        {
            return ExitStatus::Refused;
        }
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            return match e {
                ConfigError::Io { .. } => ExitStatus::Failed,
                ConfigError::HandWritten { .. } | ConfigError::DeclaredByHand { .. } => {
                    ExitStatus::Refused
                }
                _ => ExitStatus::Config,
            };
        }
        if cause.is::<NotOwned>()
            || cause.is::<AlreadyDeclared>()
            || cause.is::<StaysOnHost>()
            || cause.is::<crate::gate::BootRefused>()
        {
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
        match cause.downcast_ref::<StateError>() {
            Some(StateError::Busy { .. }) => return ExitStatus::Busy,
            Some(StateError::Interrupted { .. }) => return ExitStatus::Refused,
            Some(StateError::Untrusted { .. }) => return ExitStatus::Config,
            _ => {}
        }
        if cause.is::<NotPrivileged>() {
            return ExitStatus::NoPermission;
        }
        if let Some(e) = cause.downcast_ref::<ApplyFailed>() {
            return if e.pending {
                ExitStatus::Pending
            } else if e.rollback_failed {
                ExitStatus::Inconsistent
            } else if e.vanished {
                ExitStatus::NotFound
            } else {
                ExitStatus::Failed
            };
        }
    }
    ExitStatus::Failed
}

/// The error and its causes on one line: `outer: inner: os error`. A cause
/// whose text its wrapper already ends with (an I/O error the wrapper's
/// message quotes) is not repeated.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string().replace('\n', " ");
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    crate::output::escape_controls(&line).into_owned()
}

/// The one JSON document `--json` prints when a command fails:
/// `{"exit_status":N,"error":{"kind":KIND,"message":LINE}}`.
pub fn error_document(status: i32, kind: ExitStatus, message: &str) -> String {
    serde_json::json!({
        "exit_status": status,
        "error": {"kind": kind.kind(), "message": message},
    })
    .to_string()
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

/// Two options that would both print to stdout.
#[derive(Debug, thiserror::Error)]
#[error("{0} both print to stdout: choose one (write the other to a file)")]
pub struct StdoutConflict(pub &'static str);

/// A file in the way that vfioctl did not write.
#[derive(Debug, thiserror::Error)]
#[error("{0} exists and was not written by vfioctl; move it aside or merge it by hand")]
pub struct NotOwned(pub String);
