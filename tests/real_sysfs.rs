//! `vfioctl list` on this machine's real /sys: read only, must work.

use std::process::Command;

#[test]
fn list_reads_the_real_host() {
    let run = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vfioctl"));
        cmd.args(["--root", "/", "list"]).env_remove("VFIOCTL_ROOT");
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("run vfioctl")
    };
    let text = run(false);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let notes = String::from_utf8(text.stderr.clone()).unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    let json = run(true);
    assert!(json.status.success());
    let devices: Vec<serde_json::Value> = serde_json::from_slice(&json.stdout).unwrap();

    let sysfs: Vec<String> = std::fs::read_dir("/sys/bus/pci/devices")
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        devices.len(),
        sysfs.len(),
        "one record per function in sysfs"
    );
    for dev in &devices {
        let addr = dev["address"].as_str().unwrap();
        assert!(sysfs.iter().any(|s| s == addr));
        let vendor =
            std::fs::read_to_string(format!("/sys/bus/pci/devices/{addr}/vendor")).unwrap();
        assert_eq!(
            vendor.trim().trim_start_matches("0x"),
            dev["vendor_id"].as_str().unwrap()
        );
        let driver = std::fs::read_link(format!("/sys/bus/pci/devices/{addr}/driver"))
            .ok()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned());
        assert_eq!(dev["driver"].as_str().map(str::to_string), driver);
    }

    let iommu_on = std::fs::read_dir("/sys/class/iommu")
        .map(|d| d.count() > 0)
        .unwrap_or(false)
        || std::fs::read_dir("/sys/kernel/iommu_groups")
            .map(|d| d.count() > 0)
            .unwrap_or(false);
    // Notes go to stderr (one note policy).
    assert_eq!(notes.contains("note: IOMMU: off"), !iommu_on, "{notes}");
    assert!(!text.contains("IOMMU: off"), "{text}");
}

/// On this machine (a VM whose disk and network are virtio PCI functions),
/// the device holding / is refused even with --force. Dry runs only: this
/// test must never write to the real /sys.
#[test]
fn the_real_root_disk_is_refused_even_forced() {
    let root_dev = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        .unwrap();
    let Ok(block) = std::fs::canonicalize(format!("/sys/dev/block/{root_dev}")) else {
        eprintln!("skipped: / is not on a block device here ({root_dev})");
        return;
    };
    let Some(addr) = block.components().rev().find_map(|c| {
        let name = c.as_os_str().to_string_lossy().into_owned();
        (name.matches(':').count() == 2 && name.contains('.')).then_some(name)
    }) else {
        eprintln!(
            "skipped: / is not on a PCI device here ({})",
            block.display()
        );
        return;
    };
    let output = Command::new(env!("CARGO_BIN_EXE_vfioctl"))
        .args(["--root", "/", "unbind", &addr, "--dry-run", "--force"])
        .env_remove("VFIOCTL_ROOT")
        .output()
        .expect("run vfioctl");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("{addr} backs the root filesystem"))
            && stderr.contains("refused even with --force"),
        "{stderr}"
    );
}
