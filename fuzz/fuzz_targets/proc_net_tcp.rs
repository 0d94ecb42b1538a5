//! `/proc/net/tcp` and `/proc/net/tcp6`; the first byte's low bit picks the table.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    if let Ok(s) = std::str::from_utf8(rest) {
        rolecall::fuzzing::proc_net_tcp(s, kind & 1 == 1);
    }
});
