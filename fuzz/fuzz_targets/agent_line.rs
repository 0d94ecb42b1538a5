//! The `agent-send` line HAProxy's agent check sends, and the reply lines the same bytes give
//! as a verdict's reason and an operator's note.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rolecall::fuzzing::agent_line(data);
});
