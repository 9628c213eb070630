//! The change engine: plan (pure), apply (writes, verification, rollback),
//! run (lock -> read -> plan -> apply -> record) and enforce (declarations).

pub mod apply;
pub mod enforce;
pub mod plan;
pub mod refusal;
pub mod run;
