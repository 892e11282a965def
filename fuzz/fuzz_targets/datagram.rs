//! `scripts/fuzz datagram`: see [`callrelay_fuzz::datagram`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callrelay_fuzz::datagram(data));
