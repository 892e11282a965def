//! `scripts/fuzz sdp`: see [`callrelay_fuzz::sdp`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callrelay_fuzz::sdp(data));
