//! The change engine: plan (pure), apply (writes, verification, rollback),
//! run (lock -> read -> plan -> apply -> record), enforce (declarations)
//! and sriov (a PF's VF count, its VFs bound through plan and apply).

pub mod apply;
pub mod enforce;
pub mod plan;
pub mod recover;
pub mod run;
pub mod sriov;
