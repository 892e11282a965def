//! Benchmarks live in `benches/`; see `benches/README.md` for the figures and how to run them.
//! [`rig`] sets up real str0m sessions with the sans-IO core, in memory, for the forwarding
//! benches and the allocation test.
#![forbid(unsafe_code)]

pub mod rig;
