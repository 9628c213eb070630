//! Builds a small GPU fake host root (the Ansible collection's integration tests): `cargo run
//! --example fakehost_gpus -- DIR GPUS [nic]`. Each GPU sits behind its own PCIe switch
//! port with an audio companion in its group; a quarter are on vfio-pci and
//! declared. With `nic`, a two-port igb NIC too (0000:e0:00.0 with eno1,
//! which carries the default route, and 0000:e0:00.1 with eno2), each port
//! in its own group. The tree is the test suite's faithful sysfs layout.

#[path = "../tests/support/fakehost.rs"]
mod fakehost;

use fakehost::{Dev, FakeHost};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(gpus)) = (args.next(), args.next()) else {
        eprintln!("usage: fakehost DIR GPUS");
        std::process::exit(2);
    };
    let gpus: u32 = gpus.parse().expect("GPUS is a number");
    let nic = args.next().as_deref() == Some("nic");
    let mut host = FakeHost::new();
    host.iommu_unit("dmar0");
    host.register_driver("vfio-pci", Some("vfio_pci"));
    let mut group = 0;
    for i in 0..gpus {
        // 4 functions per GPU: root port, switch downstream port, GPU, audio.
        let domain = i / 200;
        let bus = (i % 200) as u8 + 1;
        let port = format!("{domain:04x}:00:{:02x}.{}", (i % 200) / 8, (i % 200) % 8);
        let down = format!("{domain:04x}:{bus:02x}:00.0");
        let gpu_bus = bus.wrapping_add(50);
        let gpu = format!("{domain:04x}:{gpu_bus:02x}:00.0");
        let audio = format!("{domain:04x}:{gpu_bus:02x}:00.1");
        group += 1;
        host.add(Dev::bridge(&port, 0x8086, 0x347a).group(group));
        group += 1;
        host.add(
            Dev::bridge(&down, 0x1000, 0xc010)
                .parent(&port)
                .group(group),
        );
        group += 1;
        let mut g = Dev::endpoint(&gpu, 0x10de, 0x2204, 0x030000)
            .parent(&down)
            .group(group);
        let mut a = Dev::endpoint(&audio, 0x10de, 0x1aef, 0x040300)
            .parent(&down)
            .group(group)
            .supplier(&gpu);
        if i % 4 == 0 {
            g = g
                .driver("vfio-pci", Some("vfio_pci"))
                .driver_override("vfio-pci");
            a = a
                .driver("vfio-pci", Some("vfio_pci"))
                .driver_override("vfio-pci");
        } else {
            g = g.driver("nvidia", Some("nvidia"));
            a = a.driver("snd_hda_intel", Some("snd_hda_intel"));
        }
        host.add(g);
        host.add(a);
    }
    if nic {
        for (function, iface) in [(0, "eno1"), (1, "eno2")] {
            group += 1;
            let address = format!("0000:e0:00.{function}");
            host.add(
                Dev::endpoint(&address, 0x8086, 0x1521, 0x020000)
                    .driver("igb", Some("igb"))
                    .group(group),
            );
            host.netdev(&address, iface);
        }
        host.route("eno1", true);
    }
    host.write(
        "etc/vfioctl/bindings.d/gpus.toml",
        "[[binding]]\nvendor = \"10de\"\ndevice = \"2204\"\n[[binding]]\nvendor = \"10de\"\ndevice = \"1aef\"\n",
    );
    let kept = host.keep();
    std::fs::rename(&kept, &dir).expect("move the tree to DIR (same filesystem)");
    println!("{dir}: {} functions", gpus * 4);
}
