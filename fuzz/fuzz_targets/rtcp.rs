//! `scripts/fuzz rtcp`: str0m's RTCP compound-packet parser and the feedback conversion (NACK,
//! PLI/FIR, REMB, TWCC): what the relay runs on every SRTCP-authenticated packet, whose lengths
//! and counts a participant controls (THREATS 11). Only in the libFuzzer build: str0m exports
//! it under `_internal_test_exports`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = str0m::_internal_test_exports::fuzz::rtcp(data);
});
