#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edgefleet_codec::fuzzing::open_console_state_pinning(data));
