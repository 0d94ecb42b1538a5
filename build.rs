//! Sets `ROLECALL_REVISION` for the crate: the commit `rolecall --version` and `/metrics` name.
//!
//! From `git rev-parse --short=12 HEAD` when the crate is the top of a git checkout (a worktree
//! too), else from `ROLECALL_REVISION` in the build's environment (a packager building from a
//! tarball), else "unknown". It never fails the build.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ROLECALL_REVISION");
    let revision = own_checkout()
        .then(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .flatten()
        .or_else(|| std::env::var("ROLECALL_REVISION").ok())
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=ROLECALL_REVISION={revision}");
    if own_checkout() {
        rerun_on_new_commits();
    }
}

/// Whether the crate is the top of a git checkout: a source tarball unpacked inside another
/// repository (a distribution's packaging tree) must not take that repository's commit.
fn own_checkout() -> bool {
    let (Some(top), Ok(manifest)) = (
        git(&["rev-parse", "--show-toplevel"]),
        std::env::var("CARGO_MANIFEST_DIR"),
    ) else {
        return false;
    };
    let canonical = |p: &str| std::fs::canonicalize(p).ok();
    canonical(&top).is_some_and(|t| Some(t) == canonical(&manifest))
}

/// A commit moves HEAD (detached) or the branch it names (a loose ref, or `packed-refs` after
/// `git gc`). The paths come from git itself: in a worktree `.git` is a file, and the refs live
/// in the main repository's directory.
fn rerun_on_new_commits() {
    let mut paths = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        paths.push(git(&["rev-parse", "--git-path", &branch]));
    }
    paths.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in paths.into_iter().flatten().map(PathBuf::from) {
        // A path that does not exist would make cargo run this script on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

/// One line of git's output, or `None` without git, outside a checkout, or on any error.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}
