//! Usage that runs through the network or through pools: a root filesystem
//! on ZFS, NFS, iSCSI or NBD (traced to the interface the route to the
//! server leaves by), interfaces enslaved to a master (bridge, bond, team,
//! Open vSwitch, macvlan), and network functions whose interface lives in
//! another network namespace. Everything is read from files under the host
//! root, so fake roots stage every case.

use std::collections::BTreeSet;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use crate::model::usage::{DeviceUse, UsageMap};
use crate::model::PciAddress;

use super::root::HostRoot;
use super::usage_walk::{
    add, block_to_pci, netdev_to_pci, parse_mountinfo, pci_ancestor, MountLine,
};

/// One IPv4 route: destination, prefix length, interface, table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    pub interface: String,
    /// 254 is main; policy routing and VRFs use others.
    pub table: u32,
}

/// Where routes come from: rtnetlink on the real host (every table), or
/// `/proc/net/route` under a fake root (tests stage it there; netlink is
/// not under `--root`).
pub trait RouteFacts {
    fn routes(&self) -> Vec<Route>;
}

/// The routes of the running host, every table, through rtnetlink.
pub struct NetlinkRoutes<'a>(pub &'a HostRoot);

/// Table 255 holds the host's own addresses (already seen as addresses).
const LOCAL_TABLE: u32 = 255;

impl RouteFacts for NetlinkRoutes<'_> {
    fn routes(&self) -> Vec<Route> {
        let names = interface_names(self.0);
        match netlink_dump() {
            Ok(raw) => raw
                .into_iter()
                .filter(|(_, _, _, table)| *table != LOCAL_TABLE)
                .filter_map(|(destination, prefix, oif, table)| {
                    Some(Route {
                        destination,
                        prefix,
                        interface: names.iter().find(|(i, _)| *i == oif)?.1.clone(),
                        table,
                    })
                })
                .collect(),
            // Not allowed to ask (seccomp, no netlink): the main table.
            Err(_) => ProcRoutes(self.0).routes(),
        }
    }
}

/// Interface index -> name, from /sys/class/net.
fn interface_names(root: &HostRoot) -> Vec<(u32, String)> {
    fs::read_dir(root.path("/sys/class/net"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let index = fs::read_to_string(e.path().join("ifindex")).ok()?;
            Some((
                index.trim().parse().ok()?,
                e.file_name().to_string_lossy().into_owned(),
            ))
        })
        .collect()
}

/// Every IPv4 route of every table: (destination, prefix, oif, table).
fn netlink_dump() -> std::io::Result<Vec<(Ipv4Addr, u8, u32, u32)>> {
    use netlink_packet_core::{
        NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
    };
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut request = RouteMessage::default();
    request.header.address_family = AddressFamily::Inet;
    let mut message = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetRoute(request)),
    );
    message.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    message.header.sequence_number = 1;
    message.finalize();
    let mut out = vec![0; message.header.length as usize];
    message.serialize(&mut out);
    socket.send(&out, 0)?;
    let mut routes = Vec::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut buffer[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buffer[offset..size])
                .map_err(|e| bad(e.to_string()))?;
            let length = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(routes),
                NetlinkPayload::Error(e) => return Err(bad(e.to_string())),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => {
                    let mut destination = Ipv4Addr::UNSPECIFIED;
                    let mut oif = None;
                    let mut table = u32::from(route.header.table);
                    for attribute in &route.attributes {
                        match attribute {
                            RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                                destination = *ip
                            }
                            RouteAttribute::Oif(index) => oif = Some(*index),
                            RouteAttribute::Table(t) => table = *t,
                            _ => {}
                        }
                    }
                    if let Some(oif) = oif {
                        routes.push((
                            destination,
                            route.header.destination_prefix_length,
                            oif,
                            table,
                        ));
                    }
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            offset += length;
        }
    }
}

/// The IPv4 routes of `/proc/net/route` under the root.
pub struct ProcRoutes<'a>(pub &'a HostRoot);

impl RouteFacts for ProcRoutes<'_> {
    fn routes(&self) -> Vec<Route> {
        let text = fs::read_to_string(self.0.path("/proc/net/route")).unwrap_or_default();
        text.lines()
            .skip(1)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // The kernel prints each big-endian address as a native
                // (little-endian) word: 192.168.0.0 reads 0000A8C0.
                let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::to_le_bytes);
                Some(Route {
                    destination: Ipv4Addr::from(word(f.get(1)?)?),
                    prefix: u32::from_ne_bytes(word(f.get(7)?)?).count_ones() as u8,
                    interface: f.first()?.to_string(),
                    table: 254,
                })
            })
            .collect()
    }
}

/// The interface the longest matching route to `server` leaves by.
pub fn route_to(routes: &[Route], server: Ipv4Addr) -> Option<String> {
    routes
        .iter()
        .filter(|r| {
            let mask = if r.prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(r.prefix))
            };
            u32::from(server) & mask == u32::from(r.destination) & mask
        })
        .max_by_key(|r| r.prefix)
        .map(|r| r.interface.clone())
}

/// The server of a network root: NFS's `addr=` option (or the source's
/// host part), iSCSI's connection address, NBD's peer.
fn network_root(root: &HostRoot, m: &MountLine) -> Option<(String, Option<IpAddr>)> {
    if m.fstype.starts_with("nfs") {
        let addr = m
            .options
            .split(',')
            .find_map(|o| o.strip_prefix("addr="))
            .map(str::to_string)
            .or_else(|| {
                m.source
                    .rsplit_once(':')
                    .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
            })?;
        return Some((m.fstype.clone(), addr.parse().ok()));
    }
    let block = root.path("/sys/dev/block").join(&m.majmin);
    let real = fs::canonicalize(&block).ok()?;
    let text = real.to_string_lossy().into_owned();
    if let Some(session) = text.split('/').find(|c| {
        c.strip_prefix("session")
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()) && !n.is_empty())
    }) {
        let n = &session["session".len()..];
        let address = fs::read_to_string(root.path(format!(
            "/sys/class/iscsi_connection/connection{n}:0/persistent_address"
        )))
        .ok()?;
        return Some(("iscsi".to_string(), address.trim().parse().ok()));
    }
    let name = real.file_name()?.to_string_lossy().into_owned();
    if name.starts_with("nbd") {
        let pid = fs::read_to_string(root.path(format!("/sys/block/{name}/pid"))).ok();
        let peer = pid.and_then(|p| nbd_peer(root, p.trim()));
        return Some(("nbd".to_string(), peer.map(IpAddr::V4)));
    }
    None
}

/// The remote IPv4 address of the NBD client's TCP socket.
fn nbd_peer(root: &HostRoot, pid: &str) -> Option<Ipv4Addr> {
    let inodes: BTreeSet<String> = fs::read_dir(root.path(format!("/proc/{pid}/fd")))
        .ok()?
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|t| {
            t.to_string_lossy()
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect();
    let tcp = fs::read_to_string(root.path(format!("/proc/{pid}/net/tcp"))).ok()?;
    tcp.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if !inodes.contains(*f.get(9)?) {
            return None;
        }
        let (ip, _) = f.get(2)?.split_once(':')?;
        let raw = u32::from_str_radix(ip, 16).ok()?;
        Some(Ipv4Addr::from(raw.swap_bytes()))
    })
}

/// Network roots: the transport's PCI functions are host-critical. When the
/// route cannot be found, every function carrying an interface with a
/// default route is protected instead (fail closed).
fn network_roots(
    root: &HostRoot,
    mounts: &[MountLine],
    routes: &dyn RouteFacts,
    map: &mut UsageMap,
) {
    for m in mounts.iter().filter(|m| m.mountpoint == "/") {
        let Some((fstype, server)) = network_root(root, m) else {
            continue;
        };
        let table = routes.routes();
        let interfaces: Vec<String> = match server {
            Some(IpAddr::V4(ip)) => route_to(&table, ip).into_iter().collect(),
            _ => Vec::new(),
        };
        let interfaces = if interfaces.is_empty() {
            table
                .iter()
                .filter(|r| r.prefix == 0)
                .map(|r| r.interface.clone())
                .collect()
        } else {
            interfaces
        };
        let server = server.map_or_else(|| "unknown".to_string(), |s| s.to_string());
        for interface in interfaces {
            let mut addrs = BTreeSet::new();
            netdev_to_pci(root, &interface, &mut addrs, 0);
            add(
                map,
                &addrs,
                DeviceUse::NetworkRoot {
                    fstype: fstype.clone(),
                    server: server.clone(),
                    interface,
                },
            );
        }
    }
}

/// Interfaces that carry routes in tables other than main (policy routing,
/// VRFs), which /proc/net/route does not show.
fn policy_routes(root: &HostRoot, routes: &dyn RouteFacts, map: &mut UsageMap) {
    for route in routes.routes().into_iter().filter(|r| r.table != 254) {
        let mut addrs = BTreeSet::new();
        netdev_to_pci(root, &route.interface, &mut addrs, 0);
        let what = if route.prefix == 0 {
            DeviceUse::DefaultRoute {
                interface: format!("{}, table {}", route.interface, route.table),
            }
        } else {
            DeviceUse::Addresses {
                interface: format!("{} (routes in table {})", route.interface, route.table),
            }
        };
        add(map, &addrs, what);
    }
}

/// udev's database entry for a block device: its `E:KEY=VALUE` properties.
fn udev_property(root: &HostRoot, majmin: &str, key: &str) -> Option<String> {
    let text = fs::read_to_string(root.path(format!("/run/udev/data/b{majmin}"))).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("E:")?.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// ZFS pools: a dataset's pool is the first component of its source; its
/// vdevs are the block devices udev's blkid labels `zfs_member` with the
/// pool's name.
fn zfs(root: &HostRoot, mounts: &[MountLine], map: &mut UsageMap) {
    let pools: BTreeSet<(String, bool)> = mounts
        .iter()
        .filter(|m| m.fstype == "zfs")
        .filter_map(|m| {
            let pool = m.source.split('/').next()?.to_string();
            Some((pool, m.mountpoint == "/"))
        })
        .collect();
    if pools.is_empty() {
        return;
    }
    let Ok(blocks) = fs::read_dir(root.path("/sys/class/block")) else {
        return;
    };
    for entry in blocks.flatten() {
        let Ok(majmin) = fs::read_to_string(entry.path().join("dev")) else {
            continue;
        };
        let majmin = majmin.trim();
        if udev_property(root, majmin, "ID_FS_TYPE").as_deref() != Some("zfs_member") {
            continue;
        }
        let Some(label) = udev_property(root, majmin, "ID_FS_LABEL") else {
            continue;
        };
        for (pool, is_root) in pools.iter().filter(|(p, _)| *p == label) {
            let mut addrs = BTreeSet::new();
            block_to_pci(&entry.path(), &mut addrs, 0);
            let block = format!(
                "zfs pool {pool} on /dev/{}",
                entry.file_name().to_string_lossy()
            );
            let what = if *is_root {
                DeviceUse::RootFilesystem { block }
            } else {
                DeviceUse::Mount {
                    mountpoint: mounts
                        .iter()
                        .filter(|m| m.fstype == "zfs" && m.source.split('/').next() == Some(pool))
                        .map(|m| m.mountpoint.clone())
                        .next()
                        .unwrap_or_default(),
                    block,
                }
            };
            add(map, &addrs, what);
        }
    }
}

/// Interfaces enslaved to a master or stacked under an upper device.
fn masters(root: &HostRoot, map: &mut UsageMap) {
    let Ok(ifaces) = fs::read_dir(root.path("/sys/class/net")) else {
        return;
    };
    for entry in ifaces.flatten() {
        let dir = entry.path();
        let Some(addr) = pci_ancestor(&dir) else {
            continue;
        };
        let interface = entry.file_name().to_string_lossy().into_owned();
        let mut uppers: Vec<String> = fs::read_link(dir.join("master"))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
            .into_iter()
            .collect();
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(upper) = name.strip_prefix("upper_") {
                if !uppers.iter().any(|u| u == upper) {
                    uppers.push(upper.to_string());
                }
            }
        }
        for master in uppers {
            add(
                map,
                &BTreeSet::from([addr]),
                DeviceUse::Enslaved {
                    interface: interface.clone(),
                    master,
                },
            );
        }
    }
}

/// Which functions `other_namespaces` looks at.
pub enum Scope<'a> {
    /// Every function on the bus (whole-host readers: declarations, boot files).
    Host,
    /// Only these (the devices a change could release): the per-device paths
    /// stay independent of the host's size.
    Devices(&'a BTreeSet<PciAddress>),
}

/// Ethernet functions on a host driver whose interface is not in this
/// network namespace: it was moved to another one (a container's).
pub fn other_namespaces(root: &HostRoot, scope: Scope, map: &mut UsageMap) {
    let addresses: Vec<PciAddress> = match scope {
        Scope::Devices(set) => set.iter().copied().collect(),
        Scope::Host => {
            let Ok(devices) = fs::read_dir(root.path("/sys/bus/pci/devices")) else {
                return;
            };
            devices
                .flatten()
                .filter_map(|e| PciAddress::from_sysfs_name(&e.file_name().to_string_lossy()))
                .collect()
        }
    };
    for addr in addresses {
        let dir = root.path(format!("/sys/bus/pci/devices/{addr}"));
        let ethernet = fs::read_to_string(dir.join("class"))
            .is_ok_and(|c| c.trim().trim_start_matches("0x").starts_with("0200"));
        let driver = fs::read_link(dir.join("driver"))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
        let Some(driver) = driver else { continue };
        if !ethernet
            || crate::model::DriverName::new(driver.as_str()).kind()
                != crate::model::DriverKind::Host
        {
            continue;
        }
        if moved_away(&dir) {
            add(
                map,
                &BTreeSet::from([addr]),
                DeviceUse::OtherNamespace {
                    interface: format!("the {driver} interface"),
                },
            );
        }
    }
}

/// Whether the function's interface lives in another namespace: its `net`
/// directory exists (the driver made an interface) but lists nothing here,
/// because sysfs shows each namespace only its own interfaces. Virtio puts
/// it one level down, under `virtioN/net`.
fn moved_away(dir: &Path) -> bool {
    let empty = |d: &Path| fs::read_dir(d.join("net")).is_ok_and(|mut e| e.next().is_none());
    empty(dir)
        || fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("virtio") && empty(&e.path()))
}

/// Adds the usage this module finds to `map`, except `other_namespaces`,
/// which callers run for the functions they care about.
pub fn read(root: &HostRoot, map: &mut UsageMap) {
    let mounts = fs::read_to_string(root.path("/proc/self/mountinfo"))
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    if root.is_host() {
        let routes = NetlinkRoutes(root);
        network_roots(root, &mounts, &routes, map);
        policy_routes(root, &routes, map);
    } else {
        network_roots(root, &mounts, &ProcRoutes(root), map);
    }
    zfs(root, &mounts, map);
    masters(root, map);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins() {
        let routes = vec![
            Route {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
                interface: "eno1".into(),
                table: 254,
            },
            Route {
                destination: Ipv4Addr::new(10, 1, 0, 0),
                prefix: 16,
                interface: "eno2".into(),
                table: 254,
            },
        ];
        assert_eq!(
            route_to(&routes, Ipv4Addr::new(10, 1, 2, 3)).as_deref(),
            Some("eno2")
        );
        assert_eq!(
            route_to(&routes, Ipv4Addr::new(8, 8, 8, 8)).as_deref(),
            Some("eno1")
        );
    }

    /// Reads this machine's routes (read-only): every main-table route
    /// /proc/net/route shows, netlink shows too, with the same interface.
    #[test]
    fn netlink_sees_every_main_table_route() {
        let root = HostRoot::new("/");
        let netlink = NetlinkRoutes(&root).routes();
        for route in ProcRoutes(&root).routes() {
            assert!(
                netlink.iter().any(|r| r.destination == route.destination
                    && r.prefix == route.prefix
                    && r.interface == route.interface),
                "{route:?} missing from {netlink:?}"
            );
        }
    }
}
