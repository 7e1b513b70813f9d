#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasp_fuzz::manifests(data));
