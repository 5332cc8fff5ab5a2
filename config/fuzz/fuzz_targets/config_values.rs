#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgefleet_config::fuzzing::values(data));
