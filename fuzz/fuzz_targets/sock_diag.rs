//! A `NETLINK_SOCK_DIAG` datagram: a dump's, or the answer to an exact lookup.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rolecall::fuzzing::sock_diag(data);
});
