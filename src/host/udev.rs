//! udev I/O: installing the generated rules, reloading udev, logging from
//! the hook, and asking udev's database about a device.

use std::fs;
use std::io::Write;

use crate::host::config::{self, ConfigError};
use crate::host::HostRoot;

/// How long `udevadm control --reload` may take (udevd answers in
/// milliseconds; one that does not is not waited for).
const RELOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// The generated, per-host rules (data). The logic lives in the shipped
/// 70-vfioctl.rules, which runs the hook for marked devices.
pub const GENERATED_RULES: &str = "/etc/udev/rules.d/69-vfioctl-bindings.rules";
pub const STATIC_RULES_NAME: &str = "70-vfioctl.rules";
/// Where udev looks for rules, in its order of precedence.
pub const RULES_DIRS: &[&str] = &[
    "/etc/udev/rules.d",
    "/run/udev/rules.d",
    "/usr/local/lib/udev/rules.d",
    "/usr/lib/udev/rules.d",
    "/lib/udev/rules.d",
];

/// What installing the rules did, for the operator.
#[derive(Debug, Default, serde::Serialize)]
pub struct RulesStatus {
    pub written: bool,
    pub reloaded: bool,
    pub notes: Vec<String>,
}

/// Writes the generated rules `text` (as `integrations::udev::render_rules`
/// made it) when changed, and asks a running udev to reload them. Without a
/// running udev the rules take effect when it starts.
pub fn install_rules(root: &HostRoot, text: &str) -> Result<RulesStatus, ConfigError> {
    let mut status = RulesStatus::default();
    let path = root.path(GENERATED_RULES);
    if fs::read_to_string(&path).ok().as_deref() != Some(text) {
        config::write_atomic(root, &path, text, 0o644)?;
        status.written = true;
    }
    if !RULES_DIRS
        .iter()
        .any(|d| root.path(d).join(STATIC_RULES_NAME).exists())
    {
        status.notes.push(format!(
            "{STATIC_RULES_NAME} is not installed in any udev rules directory (install the vfioctl package, or run make install: it goes to the system's udev rules directory, /lib/udev/rules.d on Debian 12, /usr/lib/udev/rules.d elsewhere): declared devices are not enforced on add until it is"
        ));
    }
    if !root.is_host() {
        status
            .notes
            .push("udev not reloaded: the host root is not /".to_string());
    } else if !root.path("/run/udev/control").exists() {
        status
            .notes
            .push("udev is not running: the rules take effect when it starts".to_string());
    } else if status.written {
        match super::programs::find(super::programs::UDEVADM)
            .map_err(|e| format!("cannot run udevadm: {e}"))
            .and_then(|udevadm| {
                super::programs::run_within(udevadm, &["control", "--reload"], RELOAD_DEADLINE)
            }) {
            Ok(ran) if ran.status.success() => status.reloaded = true,
            Ok(ran) => status.notes.push(format!(
                "udevadm control --reload exited with {}",
                ran.status
            )),
            Err(e) => status.notes.push(e),
        }
    }
    Ok(status)
}

/// True when running as a udev RUN program (udev sets SEQNUM and ACTION).
pub fn under_udev() -> bool {
    std::env::var_os("SEQNUM").is_some() && std::env::var_os("ACTION").is_some()
}

/// Logs one line where it survives a udev RUN program: syslog when a syslog
/// socket exists (journald provides one), else the kernel log. Always also
/// to stderr, which udev keeps in its debug log.
pub fn log(root: &HostRoot, error: bool, message: &str) {
    eprintln!("vfioctl: {message}");
    if !root.is_host() {
        return;
    }
    let priority = if error { libc::LOG_ERR } else { libc::LOG_INFO };
    if std::path::Path::new("/dev/log").exists() {
        let text = std::ffi::CString::new(message.replace('\0', " ")).expect("no NUL bytes");
        // SAFETY: the identifier and message are valid NUL-terminated strings
        // that outlive the calls; "%s" keeps the message from being a format.
        unsafe {
            libc::openlog(c"vfioctl".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON);
            libc::syslog(priority, c"%s".as_ptr(), text.as_ptr());
            libc::closelog();
        }
    } else if let Ok(mut kmsg) = fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = kmsg.write_all(
            format!(
                "<{}>vfioctl[{}]: {message}\n",
                (libc::LOG_DAEMON | priority),
                std::process::id()
            )
            .as_bytes(),
        );
    }
}

/// The value udev's database holds for `property` on a PCI device, through
/// libudev: `Some(None)` when udev knows the device but not the property,
/// `None` when udev cannot be asked (no database, or a host root other than
/// /, which libudev cannot read).
pub fn udev_property(
    root: &HostRoot,
    addr: &crate::model::PciAddress,
    property: &str,
) -> Option<Option<String>> {
    if !root.is_host() || !std::path::Path::new("/run/udev/data").exists() {
        return None;
    }
    let syspath = fs::canonicalize(format!("/sys/bus/pci/devices/{addr}")).ok()?;
    let device = ::udev::Device::from_syspath(&syspath).ok()?;
    if !device.is_initialized() {
        return None;
    }
    Some(
        device
            .property_value(property)
            .map(|v| v.to_string_lossy().into_owned()),
    )
}
