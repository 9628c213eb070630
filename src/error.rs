//! Maps errors from anywhere in vfioctl to one line and a documented exit status.

use crate::cli::exit;
use crate::commands::show::Ambiguous;
use crate::host::sysfs::InventoryError;
use crate::model::address::AddressError;
use crate::model::{NoMatch, SelectorError};

/// The exit status for an error: the first cause in the chain that vfioctl
/// classifies decides; anything else is a plain failure.
pub fn exit_status(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<SelectorError>() || cause.is::<AddressError>() || cause.is::<Ambiguous>() {
            return exit::USAGE;
        }
        if cause.is::<NoMatch>() {
            return exit::NOT_FOUND;
        }
        if let Some(InventoryError::NoPciSysfs(_)) = cause.downcast_ref::<InventoryError>() {
            return exit::ENVIRONMENT;
        }
    }
    exit::FAILED
}

/// The error and its causes on one line: `outer: inner: os error`.
pub fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").replace('\n', " ")
}
