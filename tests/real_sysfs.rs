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
    assert_eq!(text.contains("IOMMU: off"), !iommu_on, "{text}");
}
