//! `scripts/fuzz link_id`: see [`callrelay_fuzz::link_id`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callrelay_fuzz::link_id(data));
