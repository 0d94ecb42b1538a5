//! The README's first command, `bash tests/demo.sh`, run end to end: a real failover on
//! loopback after which the pinned node is out of rotation and the Sentinel-following node in.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_readme_demo_runs_end_to_end() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_rolecall"))
        .parent()
        .unwrap()
        .to_path_buf();
    let mut child = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/demo.sh"))
        .env("ROLECALL_BIN_DIR", &bin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash tests/demo.sh");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the demo did not finish within 180 s\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("== demo complete"),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("readiness: pinned 503, follower 200"),
        "{stdout}"
    );
}
