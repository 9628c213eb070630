//! The change engine: plan (pure), apply (writes, verification, rollback),
//! run (lock -> read -> plan -> apply -> record), enforce (declarations),
//! sriov (a PF's VF count, its VFs bound through plan and apply) and reset
//! (devices reset between tenants and verified).

pub mod apply;
pub mod enforce;
pub mod plan;
pub mod recover;
pub mod reset;
pub mod run;
pub mod sriov;
