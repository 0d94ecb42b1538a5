//! `host:port` and the other addresses of the configuration and of Sentinel's answers.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        rolecall::fuzzing::address(s);
    }
});
