//! Independent devices change at once (#34): on the simulated kernel with
//! the engine free to use a thread per unit, as on a real kernel. No
//! timing decides these tests: devices that only return once all of them
//! are being unbound (`Faults::rendezvous_unbind`) prove the writes were in
//! flight together; a failure in one unit puts every unit back; a unit whose
//! unbind never returns ends the change pending (exit status 8) with the
//! others put back.

mod support;

use std::time::Duration;

use support::fakehost::FakeHost;
use support::simkernel::SimKernel;
use support::topologies;
use vfioctl::engine::apply::Status;
use vfioctl::engine::plan::Goal;
use vfioctl::engine::run::{self, ChangeReport, ChangeSpec};
use vfioctl::host::HostRoot;

const GPUS: [&str; 3] = ["0000:48:00.0", "0000:4d:00.0", "0000:8c:00.0"];

fn host() -> FakeHost {
    let host = topologies::hgx_a100();
    host.register_driver("vfio-pci", Some("vfio_pci"));
    host
}

fn threaded(host: &FakeHost) -> SimKernel<'_> {
    let mut kernel = SimKernel::new(host);
    kernel.threads = true;
    kernel
}

fn bind(host: &FakeHost, kernel: &SimKernel) -> anyhow::Result<ChangeReport> {
    let spec = ChangeSpec {
        path: vfioctl::gate::Path::Bind,
        goal: Goal::BindVfio,
        selectors: GPUS.iter().map(|a| a.parse().unwrap()).collect(),
        with_group: false,
        force: false,
        dry_run: false,
        timeout: Duration::from_millis(300),
        vms: vfioctl::host::vms::VmSource::Skipped,
    };
    run::run(&HostRoot::new(host.root()), &spec, kernel)
}

fn drivers(host: &FakeHost) -> Vec<String> {
    GPUS.iter()
        .map(|a| {
            std::fs::read_link(host.path(&format!("sys/bus/pci/devices/{a}/driver")))
                .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
                .unwrap_or_else(|_| "-".into())
        })
        .collect()
}

#[test]
fn independent_gpus_are_unbound_at_once() {
    let host = host();
    let mut kernel = threaded(&host);
    kernel.faults.rendezvous_unbind = GPUS.iter().map(|a| a.to_string()).collect();
    let report = bind(&host, &kernel).unwrap();
    let result = report.result.as_ref().unwrap();
    assert!(result.succeeded(), "{:?}", result.error);
    assert!(result.devices.iter().all(|d| d.status == Status::Done));
    assert_eq!(drivers(&host), ["vfio-pci"; 3]);
    // The report keeps the plan's order whichever finished first.
    let order: Vec<String> = result
        .devices
        .iter()
        .map(|d| d.address.to_string())
        .collect();
    assert_eq!(order, GPUS);
}

#[test]
fn a_failure_in_one_unit_puts_every_unit_back() {
    let host = host();
    let mut kernel = threaded(&host);
    // All three meet in their unbinds, so each is mid-change before any can
    // fail; then the third's probe is refused by vfio-pci.
    kernel.faults.rendezvous_unbind = GPUS.iter().map(|a| a.to_string()).collect();
    kernel
        .faults
        .rejects
        .insert((GPUS[2].into(), "vfio-pci".into()));
    let report = bind(&host, &kernel).unwrap();
    let result = report.result.as_ref().unwrap();
    assert!(!result.succeeded());
    let status = |a: &str| {
        result
            .devices
            .iter()
            .find(|d| d.address.to_string() == a)
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(status(GPUS[2]), Status::Failed);
    // The other two were unbound (they met): whatever they had reached, they are back.
    for gpu in &GPUS[..2] {
        assert!(
            matches!(status(gpu), Status::RolledBack),
            "{gpu}: {:?}",
            status(gpu)
        );
    }
    assert_eq!(drivers(&host), ["nvidia"; 3]);
    assert!(run::failure(&report).is_some_and(|f| !f.rollback_failed));
}

#[test]
fn a_unit_stuck_past_the_deadline_ends_pending_and_the_others_go_back() {
    let host = host();
    let mut kernel = threaded(&host);
    kernel.faults.hung_unbind.insert(GPUS[1].into());
    let report = bind(&host, &kernel).unwrap();
    let result = report.result.as_ref().unwrap();
    let failed = run::failure(&report).unwrap();
    assert!(failed.pending, "exit status 8: {}", failed.message);
    for d in &result.devices {
        let want = if d.address.to_string() == GPUS[1] {
            Status::Pending
        } else {
            // Finished before the deadline passed (then put back), or
            // stopped before they started: either way as before.
            if d.status == Status::Unchanged {
                Status::Unchanged
            } else {
                Status::RolledBack
            }
        };
        assert_eq!(d.status, want, "{}", d.address);
    }
    assert_eq!(drivers(&host)[0], "nvidia");
    assert_eq!(drivers(&host)[2], "nvidia");
}
