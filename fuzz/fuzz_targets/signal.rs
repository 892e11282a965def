//! `scripts/fuzz signal`: see [`callrelay_fuzz::signal`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callrelay_fuzz::signal(data));
