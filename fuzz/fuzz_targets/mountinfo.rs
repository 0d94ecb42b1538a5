//! `/proc/self/mountinfo`, as the `systemd_unit` selector reads it for the cgroup hierarchies.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rolecall::fuzzing::mountinfo(&String::from_utf8_lossy(data));
});
