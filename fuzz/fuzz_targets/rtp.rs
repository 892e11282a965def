//! `scripts/fuzz rtp`: str0m's RTP header and packet parser, with a random extension map: the
//! parser every SRTP-authenticated packet goes through in the relay (padding, CSRC count and
//! header-extension lengths are the attacker's once it holds its own keys; THREATS 9). Only
//! in the libFuzzer build: str0m exports it under `_internal_test_exports`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = str0m::_internal_test_exports::fuzz::rtp_packet(data);
    let _ = str0m::_internal_test_exports::fuzz::rtp_header(data);
});
