#![no_main]
//! Fuzz target: `wire::fuzzing::decoders` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::fuzzing::decoders(data));
