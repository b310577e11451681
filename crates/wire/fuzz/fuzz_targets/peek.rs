#![no_main]
//! Fuzz target: `wire::fuzzing::peek` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::fuzzing::peek(data));
