//! A sentinel's replies and event messages, as RESP bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(v) = rolecall::fuzzing::resp(data) {
        rolecall::fuzzing::resp_sentinel(&v);
    }
});
