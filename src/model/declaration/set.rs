//! Every declaration together ([`Declarations`]): the bindings and SR-IOV
//! PFs in file order, the VF bindings a declared PF makes, which
//! declaration governs a device (the most specific; none while the most
//! specific ones conflict), the declarations that disagree ([`Conflict`]),
//! and what each one covers. Matching is indexed by address and IDs, so it
//! is linear in devices plus declarations.
//!
//! Takes the declaration types and [`Fit`] from `mod.rs`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;
use std::sync::OnceLock;

use serde::Serialize;

use super::{Declaration, Fit, Origin, SriovDeclaration};
use crate::model::address::PciAddress;
use crate::model::device::{PciDevice, SriovRole};
use crate::model::driver::DriverKind;
use crate::model::ids::{DeviceId, DeviceIds, VendorId};

/// Every declaration, in file order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Declarations {
    pub list: Vec<Declaration>,
    /// `[[sriov]]` declarations, in file order.
    pub sriov: Vec<SriovDeclaration>,
    /// The bindings `sriov` makes for the VFs present (`with_vfs`): each
    /// VF of a declared PF, on the PF's `vf_driver`. Less specific than a
    /// `[[binding]]` naming the VF's address, more than one by IDs.
    #[serde(skip)]
    vfs: Vec<Declaration>,
    /// Built on first use from `list` and `vfs` (not changed afterwards):
    /// the declarations that can apply to a device, by address and by IDs,
    /// so matching is linear in devices + declarations, not their product.
    #[serde(skip)]
    index: OnceLock<Index>,
}

impl PartialEq for Declarations {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list && self.sriov == other.sriov
    }
}

impl Eq for Declarations {}

/// Positions in `Declarations::list`, by what a declaration can match.
#[derive(Debug, Clone, Default)]
struct Index {
    by_address: HashMap<PciAddress, Vec<usize>>,
    by_ids: HashMap<(VendorId, DeviceId), Vec<usize>>,
    /// Keys of `[[binding]]` declarations that conflict (`conflicts`).
    conflicted: HashSet<String>,
}

/// One device or PF declared twice in ways that disagree (another driver,
/// other IDs, another VF count): which one wins would depend on file order,
/// so neither is applied (`persist apply`, the udev hook, the boot files)
/// until one goes, and `check` is CRITICAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The device's key, or the PF's address for `[[sriov]]`.
    pub key: String,
    pub sriov: bool,
    pub first: Origin,
    pub again: Origin,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} declares {}{}, conflicting with {}: neither is applied until one of them goes (vfioctl persist remove, or edit by hand)",
            self.again,
            if self.sriov { "SR-IOV PF " } else { "" },
            self.key,
            self.first
        )
    }
}

impl std::error::Error for Conflict {}

/// What two declarations of one key must agree on.
fn binding_terms(d: &Declaration) -> impl PartialEq + '_ {
    (&d.driver, d.vendor, d.device, d.subsystem)
}

fn sriov_terms(d: &SriovDeclaration) -> impl PartialEq + '_ {
    (d.vendor, d.device, d.numvfs, &d.vf_driver)
}

/// Each item declared again under a key seen before, with the first one of
/// that key: (the first, the later one), in order.
fn repeats<T, K: Eq + Hash>(items: &[T], key: impl Fn(&T) -> K) -> Vec<(&T, &T)> {
    let mut first: HashMap<K, &T> = HashMap::new();
    let mut out = Vec::new();
    for item in items {
        match first.get(&key(item)) {
            Some(earlier) => out.push((*earlier, item)),
            None => {
                first.insert(key(item), item);
            }
        }
    }
    out
}

/// The declaration that governs one device, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Governing<'a> {
    pub declaration: &'a Declaration,
    /// Less specific declarations that also matched and were overruled.
    pub overruled: Vec<&'a Declaration>,
}

impl Declarations {
    pub fn new(list: Vec<Declaration>) -> Declarations {
        Declarations::with_sriov(list, Vec::new())
    }

    pub fn with_sriov(list: Vec<Declaration>, sriov: Vec<SriovDeclaration>) -> Declarations {
        Declarations {
            list,
            sriov,
            vfs: Vec::new(),
            index: OnceLock::new(),
        }
    }

    /// Whether nothing at all is declared.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty() && self.sriov.is_empty()
    }

    /// These declarations with the VFs present of each declared PF governed
    /// by its `vf_driver` (VFs of a PF whose slot holds another card are
    /// not). Every reader that matches declarations against the host calls
    /// this once with the devices it read; without it no VF is governed.
    pub fn with_vfs(self, devices: &[PciDevice]) -> Declarations {
        let mut vfs = Vec::new();
        if !self.sriov.is_empty() {
            let at: HashMap<PciAddress, &PciDevice> =
                devices.iter().map(|d| (d.address, d)).collect();
            for dev in devices {
                let SriovRole::Vf { physfn } = dev.sriov else {
                    continue;
                };
                let Some(pf) = at.get(&physfn) else {
                    continue;
                };
                if let Some(decl) = self.sriov_of(pf) {
                    vfs.push(decl.vf_binding(dev));
                }
            }
        }
        Declarations {
            vfs,
            index: OnceLock::new(),
            ..self
        }
    }

    /// The `[[sriov]]` declaration that applies to `pf` (the first of
    /// identical ones); none when its tables conflict.
    pub fn sriov_of(&self, pf: &PciDevice) -> Option<&SriovDeclaration> {
        self.sriov
            .iter()
            .find(|s| s.fit(pf) == Fit::Applies)
            .filter(|_| !self.sriov_conflicted(pf.address))
    }

    /// The `[[sriov]]` declaration a VF binding was made from, if `decl` is one.
    pub fn vf_source(&self, decl: &Declaration) -> Option<&SriovDeclaration> {
        if !self.vfs.iter().any(|v| std::ptr::eq(v, decl)) {
            return None;
        }
        // Made from the one declared at the same file and line.
        self.sriov.iter().find(|s| s.origin == decl.origin)
    }

    /// `[[sriov]]` declarations whose address holds a different device now.
    pub fn sriov_mismatches<'a>(
        &'a self,
        devices: &'a [PciDevice],
    ) -> Vec<(&'a SriovDeclaration, DeviceIds)> {
        let at: HashMap<PciAddress, &PciDevice> = devices.iter().map(|d| (d.address, d)).collect();
        self.sriov
            .iter()
            .filter_map(|decl| match decl.fit(at.get(&decl.address)?) {
                Fit::Mismatch { found } => Some((decl, found)),
                _ => None,
            })
            .collect()
    }

    /// The declaration at position `i` of `list` followed by `vfs`.
    fn at(&self, i: usize) -> &Declaration {
        match i.checked_sub(self.list.len()) {
            Some(j) => &self.vfs[j],
            None => &self.list[i],
        }
    }

    /// More specific declarations win: a `[[binding]]` by address, then a
    /// VF's `[[sriov]]`, then one by IDs with subsystem IDs, then by IDs.
    fn specificity(&self, i: usize) -> u8 {
        let decl = self.at(i);
        let by_address = if i >= self.list.len() {
            2
        } else if decl.address.is_some() {
            4
        } else {
            0
        };
        by_address + u8::from(decl.subsystem.is_some())
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| {
            let mut index = Index {
                conflicted: self
                    .conflicts()
                    .into_iter()
                    .filter(|c| !c.sriov)
                    .map(|c| c.key)
                    .collect(),
                ..Index::default()
            };
            for (i, decl) in self.list.iter().chain(&self.vfs).enumerate() {
                match decl.address {
                    Some(addr) => index.by_address.entry(addr).or_default().push(i),
                    None => index
                        .by_ids
                        .entry((decl.vendor, decl.device))
                        .or_default()
                        .push(i),
                }
            }
            index
        })
    }

    /// Positions of the declarations that could apply to `dev`, in file order.
    fn candidates(&self, dev: &PciDevice) -> Vec<usize> {
        let index = self.index();
        let none = Vec::new();
        let mut found: Vec<usize> = index
            .by_address
            .get(&dev.address)
            .unwrap_or(&none)
            .iter()
            .chain(
                index
                    .by_ids
                    .get(&(dev.ids.vendor, dev.ids.device))
                    .unwrap_or(&none),
            )
            .copied()
            .collect();
        found.sort_unstable();
        found
    }

    /// The most specific declaration that applies to `dev`; none when the
    /// most specific ones conflict (`conflicts`): nothing is applied for it.
    pub fn governing(&self, dev: &PciDevice) -> Option<Governing<'_>> {
        let mut fits = self.applying(dev).into_iter().map(|i| self.at(i));
        let declaration = fits.next()?;
        Some(Governing {
            declaration,
            overruled: fits.collect(),
        })
    }

    /// Whether `decl` (of `list`) is one of a key declared in conflict.
    fn conflicted(&self, i: usize) -> bool {
        i < self.list.len() && self.index().conflicted.contains(&self.list[i].key())
    }

    /// Declarations of one key that disagree, and `[[sriov]]` tables of one
    /// PF that disagree: (the first, each later one that differs from it).
    pub fn conflicts(&self) -> Vec<Conflict> {
        let conflict = |sriov: bool, key: String, first: &Origin, again: &Origin| Conflict {
            key,
            sriov,
            first: first.clone(),
            again: again.clone(),
        };
        let bindings = repeats(&self.list, Declaration::key)
            .into_iter()
            .filter(|(first, again)| binding_terms(first) != binding_terms(again))
            .map(|(first, again)| conflict(false, again.key(), &first.origin, &again.origin));
        let pfs = repeats(&self.sriov, |d| d.address)
            .into_iter()
            .filter(|(first, again)| sriov_terms(first) != sriov_terms(again))
            .map(|(first, again)| conflict(true, again.key(), &first.origin, &again.origin));
        bindings.chain(pfs).collect()
    }

    /// The conflict that leaves `dev` without a declaration applied: one of
    /// its own key, of its `[[sriov]]` as a PF, or of its PF's as a VF.
    pub fn conflict_for(&self, dev: &PciDevice) -> Option<Conflict> {
        let pf = match dev.sriov {
            SriovRole::Vf { physfn } => Some(physfn),
            _ => None,
        };
        self.conflicts().into_iter().find(|c| {
            if c.sriov {
                let key = c.key.as_str();
                key == dev.address.to_string() || pf.is_some_and(|p| p.to_string() == key)
            } else {
                self.list
                    .iter()
                    .any(|d| d.key() == c.key && d.fit(dev) == Fit::Applies)
            }
        })
    }

    /// Whether the `[[sriov]]` tables for the PF at `address` disagree.
    pub fn sriov_conflicted(&self, address: PciAddress) -> bool {
        let mut tables = self.sriov.iter().filter(|s| s.address == address);
        let Some(first) = tables.next() else {
            return false;
        };
        tables.any(|s| sriov_terms(s) != sriov_terms(first))
    }

    /// The `[[sriov]]` declarations to apply: one per PF (the first of
    /// identical ones), none for a PF whose tables conflict.
    pub fn sriov_in_force(&self) -> Vec<&SriovDeclaration> {
        let mut seen = HashSet::new();
        self.sriov
            .iter()
            .filter(|s| seen.insert(s.address) && !self.sriov_conflicted(s.address))
            .collect()
    }

    /// The `[[binding]]` declarations to apply (boot files): one per key
    /// (the first of identical ones), none for a key declared in conflict.
    pub fn bindings_in_force(&self) -> Vec<&Declaration> {
        let mut seen = HashSet::new();
        self.list
            .iter()
            .enumerate()
            .filter(|(i, d)| seen.insert(d.key()) && !self.conflicted(*i))
            .map(|(_, d)| d)
            .collect()
    }

    /// Positions of the declarations that apply to `dev`, the governing one
    /// first: most specific, and among equals the first in file order.
    /// None at all when the most specific declarations conflict.
    fn applying(&self, dev: &PciDevice) -> Vec<usize> {
        let mut fits: Vec<usize> = self
            .candidates(dev)
            .into_iter()
            .filter(|&i| self.at(i).fit(dev) == Fit::Applies)
            .collect();
        fits.sort_by_key(|&i| std::cmp::Reverse(self.specificity(i)));
        if fits.first().is_some_and(|&i| self.conflicted(i)) {
            return Vec::new();
        }
        fits
    }

    /// Whether the declaration governing `dev` asks for a VFIO driver
    /// (auto, vfio-pci or a variant): vfioctl keeps it off the host's drivers.
    pub fn declares_vfio(&self, dev: &PciDevice) -> bool {
        self.governing(dev).is_some_and(|g| {
            g.declaration
                .driver
                .named()
                .is_none_or(|d| d.kind() == DriverKind::Vfio)
        })
    }

    /// The devices some declaration governs.
    pub fn declared<'a>(
        &'a self,
        devices: &'a [PciDevice],
    ) -> impl Iterator<Item = &'a PciDevice> + 'a {
        devices.iter().filter(move |d| self.governing(d).is_some())
    }

    /// For each declaration (same order as `list`), the devices it governs
    /// (it is their most specific declaration). One pass over the devices.
    pub fn coverage<'a>(&'a self, devices: &'a [PciDevice]) -> Vec<Vec<&'a PciDevice>> {
        let mut covered = vec![Vec::new(); self.list.len() + self.vfs.len()];
        for dev in devices {
            if let Some(&i) = self.applying(dev).first() {
                covered[i].push(dev);
            }
        }
        covered.truncate(self.list.len());
        covered
    }

    /// The VF bindings `with_vfs` made and the VF each governs (none when a
    /// `[[binding]]` naming the VF's address overrules it).
    pub fn vf_coverage<'a>(
        &'a self,
        devices: &'a [PciDevice],
    ) -> Vec<(&'a Declaration, &'a PciDevice)> {
        let at: HashMap<PciAddress, &PciDevice> = devices.iter().map(|d| (d.address, d)).collect();
        self.vfs
            .iter()
            .filter_map(|decl| {
                let dev = at.get(&decl.address?)?;
                let governing = self.governing(dev)?;
                std::ptr::eq(governing.declaration, decl).then_some((decl, *dev))
            })
            .collect()
    }

    /// Declarations of a key declared earlier (same address, or same IDs):
    /// (the earlier one, the later one). Identical when their drivers agree,
    /// conflicting otherwise.
    pub fn duplicates(&self) -> Vec<(&Declaration, &Declaration)> {
        repeats(&self.list, Declaration::key)
    }

    /// Declarations whose address holds a different device now.
    pub fn mismatches<'a>(&'a self, devices: &'a [PciDevice]) -> Vec<(&'a Declaration, DeviceIds)> {
        let at: HashMap<PciAddress, &PciDevice> = devices.iter().map(|d| (d.address, d)).collect();
        self.list
            .iter()
            .filter_map(|decl| {
                let dev = at.get(&decl.address?)?;
                match decl.fit(dev) {
                    Fit::Mismatch { found } => Some((decl, found)),
                    _ => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::decl;
    use super::super::DeclaredDriver;
    use super::*;
    use crate::model::device::tests::endpoint;
    use crate::model::driver::DriverName;

    fn vf(addr: &str, pf: &str) -> PciDevice {
        let mut vf = endpoint(addr, 0x020000);
        vf.ids.vendor = VendorId(0x8086);
        vf.ids.device = DeviceId(0x10ca);
        vf.sriov = SriovRole::Vf {
            physfn: pf.parse().unwrap(),
        };
        vf
    }

    fn nic() -> Vec<PciDevice> {
        let mut pf = endpoint("3b:00.0", 0x020000);
        pf.ids.vendor = VendorId(0x8086);
        pf.ids.device = DeviceId(0x10c9);
        pf.sriov = SriovRole::Pf {
            total_vfs: 7,
            num_vfs: 2,
            vfs: vec!["3b:10.0".parse().unwrap(), "3b:10.2".parse().unwrap()],
        };
        vec![pf, vf("3b:10.0", "3b:00.0"), vf("3b:10.2", "3b:00.0")]
    }

    fn sriov(device: u16) -> SriovDeclaration {
        SriovDeclaration {
            address: "3b:00.0".parse().unwrap(),
            vendor: VendorId(0x8086),
            device: DeviceId(device),
            numvfs: 2,
            vf_driver: DeclaredDriver::Auto,
            origin: Origin {
                file: "/etc/vfioctl/bindings.d/s.toml".into(),
                line: 1,
            },
        }
    }

    #[test]
    fn a_declared_pf_governs_its_vfs_unless_a_binding_names_one() {
        let devices = nic();
        let by_ids = Declaration {
            driver: DeclaredDriver::Named(DriverName::new("igbvf")),
            ..Declaration::of_ids(VendorId(0x8086), DeviceId(0x10ca), "/a.toml", 1)
        };
        let by_address = Declaration {
            address: Some("3b:10.2".parse().unwrap()),
            driver: DeclaredDriver::Named(DriverName::new("pci-stub")),
            ..Declaration::of_ids(VendorId(0x8086), DeviceId(0x10ca), "/b.toml", 1)
        };
        let decls = Declarations::with_sriov(
            vec![by_ids.clone(), by_address.clone()],
            vec![sriov(0x10c9)],
        );
        // Without the host's devices no VF is governed by the PF.
        assert_eq!(decls.governing(&devices[1]).unwrap().declaration, &by_ids);
        let decls = decls.with_vfs(&devices);
        let first = decls.governing(&devices[1]).unwrap();
        assert_eq!(first.declaration.driver, DeclaredDriver::Auto);
        assert_eq!(
            first.declaration.origin.file,
            "/etc/vfioctl/bindings.d/s.toml"
        );
        assert_eq!(first.overruled, vec![&by_ids]);
        assert_eq!(decls.vf_source(first.declaration), Some(&decls.sriov[0]));
        assert_eq!(decls.vf_source(&by_ids), None);
        let second = decls.governing(&devices[2]).unwrap();
        assert_eq!(second.declaration, &by_address);
        assert_eq!(second.overruled.len(), 2);
        assert!(
            decls.governing(&devices[0]).is_none(),
            "the PF keeps its driver"
        );
        let vfs = decls.vf_coverage(&devices);
        assert_eq!(vfs.len(), 1);
        assert_eq!(vfs[0].1.address, devices[1].address);
        // The ID declaration covers nothing: both VFs have a more specific one.
        let coverage: Vec<Vec<PciAddress>> = decls
            .coverage(&devices)
            .iter()
            .map(|c| c.iter().map(|d| d.address).collect())
            .collect();
        assert_eq!(coverage, vec![vec![], vec![devices[2].address]]);
    }

    #[test]
    fn a_replaced_pf_governs_no_vf() {
        let devices = nic();
        let decls = Declarations::with_sriov(vec![], vec![sriov(0x1521)]).with_vfs(&devices);
        assert!(devices.iter().all(|d| decls.governing(d).is_none()));
        let mismatches = decls.sriov_mismatches(&devices);
        assert_eq!(mismatches.len(), 1);
        assert_eq!(mismatches[0].1, devices[0].ids);
    }

    #[test]
    fn the_most_specific_declaration_governs() {
        let gpu = endpoint("25:00.0", 0x030200);
        let mut by_address = decl(Some("25:00.0"), None);
        by_address.driver = DeclaredDriver::Named(DriverName::new("pci-stub"));
        let all = Declarations::new(vec![
            decl(None, None),
            decl(None, Some((0x10de, 0x134f))),
            by_address.clone(),
        ]);
        let governing = all.governing(&gpu).unwrap();
        assert_eq!(governing.declaration, &by_address);
        assert_eq!(governing.overruled.len(), 2);
        assert!(governing.overruled[0].subsystem.is_some());
    }
}
