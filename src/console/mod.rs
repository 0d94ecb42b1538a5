//! What a person reads: the page at `/` and the `rolecall status` and `rolecall maint`
//! commands, all made of the `/status` document.
//!
//! - `view`: the `/status` document as the views read it (parsed from its JSON, every field
//!   defaulted), ages in words, the verdict's exit code.
//! - `text`: `rolecall status` on a terminal.
//! - `page`: the HTML page at `/`.
//! - `client`: the command-line side: a small HTTP client for the daemon's listener, and
//!   `rolecall status` (once or `--watch`).
//! - `maint`: `rolecall maint` (the flag file or the token endpoint).

mod client;
mod maint;
pub mod page;
#[cfg(test)]
mod testdata;
pub mod text;
pub mod view;

pub use client::{StatusOptions, Target, status};
pub use maint::{MaintAction, maint};
