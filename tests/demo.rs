//! The README's first command, `bash tests/demo.sh` (without `--install`: the suite installs
//! the servers itself, and a test never calls apt-get), run end to end: a real failover on
//! loopback after which the pinned node is out of rotation and the Sentinel-following node in.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the demo may take: about 20 s on a quiet machine.
const DEADLINE: Duration = Duration::from_secs(180);

#[test]
fn the_readme_demo_runs_end_to_end() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_rolecall"))
        .parent()
        .unwrap()
        .to_path_buf();
    // Output through temp files, so a chatty script never blocks on a full pipe.
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/demo.sh"))
        .env("ROLECALL_BIN_DIR", &bin)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        // Its own process group: on a timeout every server, node and rolecall it started dies
        // with it, not only bash.
        .process_group(0)
        .spawn()
        .expect("run bash tests/demo.sh");
    let read = |f: &tempfile::NamedTempFile| std::fs::read_to_string(f.path()).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let group = i32::try_from(child.id()).unwrap();
            // SAFETY: a plain kill(2) of the process group this test created.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "the demo did not finish within {DEADLINE:?}; its process group was killed\n{}\n{}",
                read(&out),
                read(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = read(&out);
    assert!(
        status.success() && stdout.contains("== demo complete"),
        "{status}\n{stdout}\n{}",
        read(&err)
    );
    assert!(
        stdout.contains("readiness: pinned 503, follower 200"),
        "{stdout}"
    );
}
