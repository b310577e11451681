#![no_main]
//! Fuzz target: `llmux_wire::fuzzing::streams` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| llmux_wire::fuzzing::streams(data));
