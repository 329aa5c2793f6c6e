//! The beema-hooks benchmark suite: helpers shared by the driver (`beema-hooks-bench`) and the
//! fast receiver (`bench-receiver`). See BENCHMARKS.md for what is measured and why.

pub mod procs;
pub mod receiver;
pub mod util;
