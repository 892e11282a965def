//! `scripts/fuzz token`: see [`callrelay_fuzz::token`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callrelay_fuzz::token(data));
