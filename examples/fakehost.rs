//! Builds a large fake host root for benchmarks (`make bench`):
//! `cargo run --release --example fakehost -- DIR FUNCTIONS [--one-gpu]`, or
//! the seed HGX board for the simulated-kernel rows (bench/simkernel.py):
//! `cargo run --release --example fakehost -- DIR hgx` (see [`hgx`]).
//!
//! FUNCTIONS is rounded up to a multiple of 64. Every 64 functions are one
//! block shaped like a slice of a GPU server:
//! - a PCIe switch (root port, upstream port, three downstream ports) with two
//!   data-centre GPUs (SR-IOV capable, so Nova type-PF) and an NVSwitch
//!   (class "bridge", type-0 header) behind it;
//! - a dual-port SR-IOV NIC behind its root port, 24 VFs enabled per port,
//!   every fourth VF on vfio-pci;
//! - an NVMe controller with 3 VFs behind its root port.
//!
//! That is 7 bridges and 57 endpoints, each in its own IOMMU group. One GPU in
//! four is on vfio-pci and declared (by IDs, in etc/vfioctl/bindings.d). 32
//! blocks share a PCI domain. With `--one-gpu`, only the first GPU is on
//! vfio-pci (declared by address) and every VF on its PF's driver: a host
//! passing one device through, as `check`'s cost is measured on. The tree is
//! the test suite's faithful sysfs
//! layout (tests/support/fakehost.rs), plus this machine's pci.ids when present
//! so vfioctl and lspci look names up in the same database.

#[path = "../tests/support/fakehost.rs"]
mod fakehost;
#[allow(dead_code)]
#[path = "../tests/support/topologies.rs"]
mod topologies;

use fakehost::{Dev, FakeHost};

/// Functions per block, see the module comment.
const BLOCK: u32 = 64;
const BLOCKS_PER_DOMAIN: u32 = 32;
const VFS_PER_PORT: u32 = 24;
const NVME_VFS: u32 = 3;

/// Hands out IOMMU group numbers in order.
struct Groups(u32);

impl Groups {
    fn next(&mut self) -> u32 {
        self.0 += 1;
        self.0
    }
}

fn addr(domain: u32, bus: u32, index: u32) -> String {
    format!("{domain:04x}:{bus:02x}:{:02x}.{}", index / 8, index % 8)
}

fn block(host: &mut FakeHost, groups: &mut Groups, b: u32, one_gpu: bool) {
    let domain = b / BLOCKS_PER_DOMAIN;
    let slot = b % BLOCKS_PER_DOMAIN;
    let numa = (slot * 2 / BLOCKS_PER_DOMAIN) as i32;
    let base = 1 + slot * 7;
    // The block's three root ports on bus 0, each in its own group.
    let root_port = |host: &mut FakeHost, groups: &mut Groups, i: u32| {
        let rp = addr(domain, 0, slot * 3 + i);
        host.add(
            Dev::bridge(&rp, 0x8086, 0x347a)
                .group(groups.next())
                .numa(numa),
        );
        rp
    };

    // The GPU switch: root port -> upstream -> downstream ports.
    let rp = root_port(host, groups, 0);
    let up = addr(domain, base, 0);
    host.add(
        Dev::bridge(&up, 0x1000, 0xc010)
            .parent(&rp)
            .group(groups.next())
            .numa(numa),
    );
    for i in 0..3 {
        let down = addr(domain, base + 1, i * 8);
        host.add(
            Dev::bridge(&down, 0x1000, 0xc010)
                .parent(&up)
                .group(groups.next())
                .numa(numa),
        );
        let end = addr(domain, base + 2 + i, 0);
        let dev = if i < 2 {
            let gpu = Dev::endpoint(&end, 0x10de, 0x20b0, 0x030200)
                .subsystem(0x10de, 0x134f)
                .sriov(16);
            let passed = if one_gpu {
                b == 0 && i == 0
            } else {
                (b * 2 + i) % 4 == 0
            };
            if passed {
                gpu.driver("vfio-pci", Some("vfio_pci"))
                    .driver_override("vfio-pci")
            } else {
                gpu.driver("nvidia", Some("nvidia"))
            }
        } else {
            Dev::endpoint(&end, 0x10de, 0x1af1, 0x068000).driver("nvidia-nvswitch", Some("nvidia"))
        };
        host.add(dev.parent(&down).group(groups.next()).numa(numa));
    }

    // The NIC: two PFs, their VFs after them on the same bus.
    let rp = root_port(host, groups, 1);
    let nic_bus = base + 5;
    for port in 0..2 {
        host.add(
            Dev::endpoint(&addr(domain, nic_bus, port), 0x15b3, 0x101d, 0x020000)
                .revision(0)
                .parent(&rp)
                .driver("mlx5_core", Some("mlx5_core"))
                .sriov(127)
                .group(groups.next())
                .numa(numa),
        );
    }
    for port in 0..2 {
        let pf = addr(domain, nic_bus, port);
        for vf in 0..VFS_PER_PORT {
            let vf_dev = Dev::endpoint(
                &addr(domain, nic_bus, 2 + port * VFS_PER_PORT + vf),
                0x15b3,
                0x101e,
                0x020000,
            )
            .revision(0)
            .parent(&rp)
            .vf_of(&pf)
            .group(groups.next())
            .numa(numa);
            host.add(if vf % 4 == 0 && !one_gpu {
                vf_dev
                    .driver("vfio-pci", Some("vfio_pci"))
                    .driver_override("vfio-pci")
            } else {
                vf_dev.driver("mlx5_core", Some("mlx5_core"))
            });
        }
    }

    // The NVMe controller and its (unbound) VFs.
    let rp = root_port(host, groups, 2);
    let nvme = addr(domain, base + 6, 0);
    host.add(
        Dev::endpoint(&nvme, 0x144d, 0xa824, 0x010802)
            .parent(&rp)
            .driver("nvme", Some("nvme"))
            .sriov(32)
            .group(groups.next())
            .numa(numa),
    );
    for vf in 0..NVME_VFS {
        host.add(
            Dev::endpoint(&addr(domain, base + 6, 1 + vf), 0x144d, 0xa824, 0x010802)
                .parent(&rp)
                .vf_of(&nvme)
                .unbound()
                .group(groups.next())
                .numa(numa),
        );
    }
}

/// The seed HGX A100 board of the test suite (`topologies::hgx_a100`: 8
/// A100s behind PCIe switches, 6 NVSwitches on nvidia-nvswitch, each in its
/// own IOMMU group, Fabric Manager not enabled) with every GPU on nvidia: the
/// two the seed has on vfio-pci are moved back, their override cleared. The
/// host's NVMe, NIC and BMC VGA stay, vfio-pci is registered and nothing is
/// declared: `bind 10de:20b0 10de:1af1` changes all 14 functions.
fn hgx(dir: &str) {
    let host = topologies::hgx_a100();
    host.register_driver("vfio-pci", Some("vfio_pci"));
    for gpu in ["0000:25:00.0", "0000:2b:00.0"] {
        host.unbind(gpu).bind(gpu, "nvidia", Some("nvidia"));
        let dir = host.device_dir(gpu);
        std::fs::write(dir.join("driver_override"), "(null)\n").expect("clear the override");
        std::fs::write(dir.join("enable"), "1\n").expect("enable the GPU");
    }
    let kept = host.keep();
    std::fs::rename(&kept, dir).expect("move the tree to DIR (same filesystem)");
    println!("{dir}: the seed HGX board, 8 A100s and 6 NVSwitches");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(functions)) = (args.next(), args.next()) else {
        eprintln!("usage: fakehost DIR FUNCTIONS [--one-gpu] | fakehost DIR hgx");
        std::process::exit(2);
    };
    if functions == "hgx" {
        return hgx(&dir);
    }
    let functions: u32 = functions.parse().expect("FUNCTIONS is a number");
    let one_gpu = match args.next().as_deref() {
        None => false,
        Some("--one-gpu") => true,
        Some(other) => {
            eprintln!("fakehost: unknown option {other}");
            std::process::exit(2);
        }
    };
    let blocks = functions.div_ceil(BLOCK).max(1);
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0");
    host.register_driver("vfio-pci", Some("vfio_pci"));
    if let Ok(ids) = std::fs::read_to_string("/usr/share/misc/pci.ids") {
        host.pci_ids(&ids);
    }
    let mut groups = Groups(0);
    for b in 0..blocks {
        block(&mut host, &mut groups, b, one_gpu);
    }
    let declaration = if one_gpu {
        format!(
            "[[binding]]\naddress = \"{}\"\nvendor = \"10de\"\ndevice = \"20b0\"\n",
            addr(0, 3, 0)
        )
    } else {
        "[[binding]]\nvendor = \"10de\"\ndevice = \"20b0\"\n".to_string()
    };
    host.write("etc/vfioctl/bindings.d/gpus.toml", declaration);
    let kept = host.keep();
    std::fs::rename(&kept, &dir).expect("move the tree to DIR (same filesystem)");
    println!("{dir}: {} functions", blocks * BLOCK);
}
