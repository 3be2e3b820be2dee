//! cargo-fuzz target: see `tandem_fuzz::wire_frames` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_fuzz::wire_frames(data));
