//! A data server's replies (`ROLE`, `INFO`, `CLIENT LIST`, errors, the fleet registry), as
//! RESP bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(v) = rolecall::fuzzing::resp(data) {
        rolecall::fuzzing::resp_server(&v);
    }
});
