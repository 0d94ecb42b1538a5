//! `POST /maintenance`: the `Authorization` header's value and the note in the body. The first
//! byte splits the input between the two.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = rest.split_at(usize::from(split).min(rest.len()));
    rolecall::fuzzing::http_maintenance(header, body);
});
