#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzzing::cni_config(data));
