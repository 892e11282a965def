//! `scripts/fuzz config`: see [`callrelay_fuzz::config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callrelay_fuzz::config(data));
