#![no_main]
//! Fuzz target: `llmux_wire::fuzzing::decoders` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| llmux_wire::fuzzing::decoders(data));
