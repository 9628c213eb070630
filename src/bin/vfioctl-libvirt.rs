//! vfioctl-libvirt URI [nodedevs] [domains]: the only program of vfioctl
//! that links libvirt.
//!
//! It opens a read-only connection and prints one JSON object on stdout:
//! `{"node_devices": [{"name", "xml"}...], "domains": [...]}`, each list
//! sorted by name, `null` when not asked for (default: both). Per domain:
//! name, uuid, id, active, state, persistent, autostart, the live XML when
//! active and the inactive XML when persistent. A domain that vanishes while
//! it is read (libvirt's no-domain error) is left out; any other error fails
//! the whole read. On failure it prints one line on stderr and exits 2
//! (cannot connect) or 3 (a query failed). vfioctl runs it with a deadline
//! (see src/host/libvirt.rs), so that vfioctl itself and its udev hook never
//! pay libvirt's start-up cost.
//!
//! vfioctl starts it as the leader of a process group of its own, with
//! SIGTERM as its parent-death signal. Whatever libvirt starts for the
//! connection (the `ssh` of a `qemu+ssh` URI, the command of `qemu+ext`)
//! runs in that group; vfioctl kills the group at its deadline and when it
//! is done, and on SIGTERM, SIGINT or SIGHUP (vfioctl gone) the helper kills
//! the group itself: no transport outlives vfioctl.

use std::collections::HashSet;
use std::io::Write;

use vfioctl::host::libvirt::{DomainListing, NodeDeviceXml, Snapshot, HELPER_UNREACHABLE};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::{Error, ErrorNumber};
use virt::sys;

const QUERY_FAILED: i32 = 3;

/// libvirt's message on one line.
fn message(err: &Error) -> String {
    err.message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn fail(status: i32, text: String) -> ! {
    eprintln!("{text}");
    std::process::exit(status);
}

fn node_devices(conn: &Connect) -> Vec<NodeDeviceXml> {
    let devices = conn
        .list_all_node_devices(sys::VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
        .unwrap_or_else(|e| {
            fail(
                QUERY_FAILED,
                format!("listing PCI node devices: {}", message(&e)),
            )
        });
    let mut out = Vec::with_capacity(devices.len());
    for dev in &devices {
        let name = dev.name().unwrap_or_else(|e| {
            fail(
                QUERY_FAILED,
                format!("reading a node device name: {}", message(&e)),
            )
        });
        let xml = dev.xml_desc(0).unwrap_or_else(|e| {
            fail(
                QUERY_FAILED,
                format!("reading the XML of {name}: {}", message(&e)),
            )
        });
        out.push(NodeDeviceXml { name, xml });
    }
    // libvirt lists in hash order; callers get a stable one.
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `virDomainGetState`, with libvirt's error (virt's `Domain::state` drops it).
fn state(dom: &Domain) -> Result<i32, Error> {
    let mut state: std::os::raw::c_int = -1;
    let mut reason: std::os::raw::c_int = -1;
    // SAFETY: the domain pointer is valid while `dom` lives; the out
    // parameters are plain integers.
    let ret = unsafe { sys::virDomainGetState(dom.as_ptr(), &mut state, &mut reason, 0) };
    if ret < 0 {
        return Err(Error::last_error());
    }
    Ok(state)
}

/// Whether an error says the domain is gone (undefined or stopped and
/// transient while it was being read).
fn gone(e: &Error) -> bool {
    matches!(e.code(), virt::enumutil::Enum::Known(ErrorNumber::NoDomain))
}

/// The UUIDs of the domains libvirt lists with `flags` (one call, filtered
/// by the daemon): what is active, persistent, autostarting, running...
fn listed(conn: &Connect, flags: sys::virConnectListAllDomainsFlags) -> HashSet<String> {
    let domains = conn.list_all_domains(flags).unwrap_or_else(|e| {
        fail(
            QUERY_FAILED,
            format!("listing the domains: {}", message(&e)),
        )
    });
    // The UUID is part of the handle: no call to the daemon.
    domains
        .iter()
        .filter_map(|d| d.uuid_string().ok())
        .collect()
}

/// Every domain with its facts. Active, persistent, autostart and the
/// state come from listings the daemon filters (a few calls whatever the
/// number of domains: 200 domains asked one by one were 1,400 calls); each
/// domain then costs one call per XML. `virDomainGetState` is asked only for
/// a domain in none of the running, paused and shut-off lists (crashed,
/// suspended, shutting down), with its error kept (virt's `Domain::state`
/// drops it). A domain gone while it is read is left out; any other error
/// fails the read.
fn domains(conn: &Connect) -> Vec<DomainListing> {
    let all = conn.list_all_domains(0).unwrap_or_else(|e| {
        fail(
            QUERY_FAILED,
            format!("listing the domains: {}", message(&e)),
        )
    });
    let active = listed(conn, sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE);
    let persistent = listed(conn, sys::VIR_CONNECT_LIST_DOMAINS_PERSISTENT);
    let autostart = listed(conn, sys::VIR_CONNECT_LIST_DOMAINS_AUTOSTART);
    let running = listed(conn, sys::VIR_CONNECT_LIST_DOMAINS_RUNNING);
    let paused = listed(conn, sys::VIR_CONNECT_LIST_DOMAINS_PAUSED);
    let shutoff = listed(conn, sys::VIR_CONNECT_LIST_DOMAINS_SHUTOFF);
    let mut out = Vec::with_capacity(all.len());
    for dom in &all {
        let read = || -> Result<Option<DomainListing>, Error> {
            let name = dom.name()?;
            let uuid = dom.uuid_string()?;
            let is = |set: &HashSet<String>| set.contains(&uuid);
            let (is_active, is_persistent) = (is(&active), is(&persistent));
            if !is_active && !is_persistent {
                // A transient domain that stopped since it was listed: gone.
                return Ok(None);
            }
            let state = if is(&running) {
                sys::VIR_DOMAIN_RUNNING as i32
            } else if is(&paused) {
                sys::VIR_DOMAIN_PAUSED as i32
            } else if is(&shutoff) {
                sys::VIR_DOMAIN_SHUTOFF as i32
            } else {
                state(dom)?
            };
            Ok(Some(DomainListing {
                id: dom.id(),
                active: is_active,
                state,
                persistent: is_persistent,
                autostart: is(&autostart),
                live_xml: if is_active {
                    Some(dom.xml_desc(0)?)
                } else {
                    None
                },
                config_xml: if is_persistent {
                    Some(dom.xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)?)
                } else {
                    None
                },
                name,
                uuid,
            }))
        };
        match read() {
            Ok(Some(listing)) => out.push(listing),
            Ok(None) => {}
            Err(e) if gone(&e) => {}
            Err(e) => {
                let name = dom.name().unwrap_or_else(|_| "?".to_string());
                fail(
                    QUERY_FAILED,
                    format!("reading domain {name}: {}", message(&e)),
                )
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// SIGTERM, SIGINT, SIGHUP: when this helper leads its own process group
/// (vfioctl started it so), it kills the whole group, the transports libvirt
/// started included; otherwise (run by hand) the signal's default action.
extern "C" fn end_group(signal: libc::c_int) {
    // SAFETY: getpgrp, getpid, kill, signal and raise are async-signal-safe.
    unsafe {
        if libc::getpgrp() == libc::getpid() {
            libc::kill(0, libc::SIGKILL);
        }
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

fn main() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(end_group),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler makes only async-signal-safe calls.
        let _ = unsafe { sigaction(signal, &action) };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((uri, what)) = args.split_first() else {
        fail(
            QUERY_FAILED,
            "usage: vfioctl-libvirt URI [nodedevs] [domains]".to_string(),
        );
    };
    if let Some(bad) = what.iter().find(|w| *w != "nodedevs" && *w != "domains") {
        fail(
            QUERY_FAILED,
            format!("vfioctl-libvirt: unknown argument {bad:?} (nodedevs, domains)"),
        );
    }
    let wants = |w: &str| what.is_empty() || what.iter().any(|a| a == w);
    // Without this, libvirt prints every error to stderr itself.
    virt::error::clear_error_callback();
    let conn = Connect::open_read_only(Some(uri))
        .unwrap_or_else(|e| fail(HELPER_UNREACHABLE, message(&e)));
    let snapshot = Snapshot {
        node_devices: wants("nodedevs").then(|| node_devices(&conn)),
        domains: wants("domains").then(|| domains(&conn)),
    };
    let text = serde_json::to_string(&snapshot).expect("the snapshot serialises");
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
        .is_err()
    {
        std::process::exit(QUERY_FAILED);
    }
}
