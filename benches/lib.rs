//! Benchmarks live in `benches/`; see `benches/README.md` for the figures and how to run them.
