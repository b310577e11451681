#![no_main]
//! Fuzz target: `wire::fuzzing::streams` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::fuzzing::streams(data));
