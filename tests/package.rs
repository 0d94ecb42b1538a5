//! The Debian package (README "Install from the Debian package"), end to end on this machine:
//!
//! 1. built by `packaging/build-deb.sh` from the binary this test run built (the `dev` profile,
//!    `--no-build`: no second build of the crate; `--fast` compression);
//! 2. its contents: the binary, the unit, the conffile, man pages, completions, the copyright
//!    file, the changelog and the examples;
//! 3. lintian finds no error;
//! 4. `dpkg -i`: the unit is installed and enabled, `systemd-analyze verify` accepts it and
//!    `systemd-analyze security --offline=true` rates it at most 2.5, as `tests/systemd.rs` does
//!    for the repository's copy;
//! 5. under a real systemd: `systemd-nspawn --boot` boots this machine's own tree (through an
//!    overlay, so whatever the container writes stays in a temporary directory) into a probe
//!    unit that checks the unit is inert without `/etc/rolecall/rolecall.toml`, writes one and
//!    sets `ROLECALL_LOG_FORMAT=json` in `/etc/default/rolecall`, starts the unit, asks
//!    `/livez`, reads `systemctl status` (JSON log lines: the environment file was read), stops
//!    it, and powers off;
//! 6. `dpkg --purge` leaves nothing behind, not even the state directory systemd makes at run
//!    time.
//!
//! Needs root and cargo-deb, dpkg-dev, lintian and systemd-container (`tests/run.sh` installs
//! them); a missing tool fails the test with how to install it. Installing is system-wide, but
//! every other test runs its own binary from the build's directory, never `/usr/bin/rolecall`.
//! A machine where the `rolecall` package is installed already is refused: the test would
//! remove it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
/// The boot, the probe and the power-off take about a second here.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `cmd`; its output, or a panic naming `hint` when the program cannot be started.
fn output(cmd: &mut Command, hint: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}; {hint}"))
}

/// Runs `cmd` and requires it to succeed; its stdout.
fn run(cmd: &mut Command, hint: &str) -> String {
    let out = output(cmd, hint);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails unless every tool is on PATH, saying how to install what is missing.
fn require_tools() {
    let tools = [
        ("cargo-deb", "cargo install cargo-deb --locked"),
        ("dpkg-shlibdeps", "apt-get install dpkg-dev"),
        ("lintian", "apt-get install lintian"),
        ("systemd-nspawn", "apt-get install systemd-container"),
        ("systemd-analyze", "apt-get install systemd"),
        ("man", "apt-get install man-db"),
    ];
    let missing: Vec<String> = tools
        .iter()
        .filter(|(tool, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(tool, how)| format!("{tool} ({how})"))
        .collect();
    assert!(
        missing.is_empty(),
        "missing: {}; tests/run.sh installs them",
        missing.join(", ")
    );
    let uid = run(Command::new("id").arg("-u"), "id is part of coreutils");
    assert_eq!(
        uid.trim(),
        "0",
        "the package test installs a package: run it as root"
    );
}

/// Whether dpkg knows the package `rolecall` in any state but "not installed".
fn installed() -> bool {
    let out = output(
        Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", "rolecall"]),
        "dpkg-query is part of dpkg",
    );
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() != "not-installed"
}

/// Undoes what the test did to the machine, whatever step failed: stops the container,
/// unmounts the overlay, purges the package.
struct Cleanup {
    container: Option<Child>,
    overlay: Option<PathBuf>,
    installed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.container.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.overlay.take() {
            let _ = Command::new("umount").arg(&dir).status();
        }
        if self.installed {
            let _ = Command::new("dpkg").args(["--purge", "rolecall"]).output();
        }
    }
}

/// The files every package must carry (besides the man pages of every command).
const FILES: &[&str] = &[
    "/usr/bin/rolecall",
    "/usr/lib/systemd/system/rolecall.service",
    "/etc/default/rolecall",
    "/usr/share/man/man1/rolecall.1.gz",
    "/usr/share/man/man1/rolecall-run.1.gz",
    "/usr/share/man/man1/rolecall-check.1.gz",
    "/usr/share/bash-completion/completions/rolecall",
    "/usr/share/zsh/vendor-completions/_rolecall",
    "/usr/share/fish/vendor_completions.d/rolecall.fish",
    "/usr/share/doc/rolecall/copyright",
    "/usr/share/doc/rolecall/changelog.Debian.gz",
    "/usr/share/doc/rolecall/examples/rolecall.example.toml",
    "/usr/share/doc/rolecall/examples/haproxy/agent-check.cfg",
    "/usr/share/doc/rolecall/examples/haproxy/agent-check-down.cfg",
    "/usr/share/doc/rolecall/examples/haproxy/http-check.cfg",
    "/usr/share/doc/rolecall/examples/deploy/kubernetes/deployment.yaml",
    "/usr/share/doc/rolecall/examples/deploy/prometheus/rolecall-rules.yml",
    "/usr/share/doc/rolecall/examples/deploy/prometheus/rolecall-rules.test.yml",
    "/usr/share/doc/rolecall/examples/deploy/grafana/rolecall.json",
];

/// Builds the package into `out`; its path.
fn build(out: &Path) -> PathBuf {
    let stdout = run(
        Command::new("bash")
            .arg(Path::new(CRATE).join("packaging/build-deb.sh"))
            // --fast: cargo-deb's quicker compression (seconds less, a larger file).
            .args(["--profile", "dev", "--no-build", "--fast", "--output"])
            .arg(out)
            .env("CARGO_TARGET_DIR", target_dir()),
        "bash is needed",
    );
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(deb.is_file(), "build-deb.sh printed no package: {stdout}");
    deb
}

/// The build directory this test binary came from (`CARGO_BIN_EXE_rolecall` is in
/// `<target>/debug/`).
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_rolecall"));
    bin.parent()
        .and_then(Path::parent)
        .expect("the binary is in <target>/<profile>/")
        .to_path_buf()
}

/// Checks the package's files and control data.
fn check_contents(deb: &Path) {
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(deb), "dpkg-deb");
    let files: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.'))
        .collect();
    for want in FILES {
        assert!(
            files.contains(want),
            "{want} not in the package:\n{listing}"
        );
    }
    let binary = listing.lines().find(|l| l.ends_with(" ./usr/bin/rolecall"));
    assert!(
        binary.is_some_and(|l| l.starts_with("-rwxr-xr-x 0/0")),
        "/usr/bin/rolecall is not an executable owned by root: {binary:?}"
    );
    let info = run(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(deb)
            .arg("Package"),
        "dpkg-deb",
    );
    assert_eq!(info.trim(), "rolecall");
    let control = tempfile::tempdir().unwrap();
    run(
        Command::new("dpkg-deb")
            .arg("-e")
            .arg(deb)
            .arg(control.path()),
        "dpkg-deb",
    );
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/default/rolecall");
    let unit = run(
        Command::new("sh").arg("-c").arg(format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -xO ./usr/lib/systemd/system/rolecall.service",
            deb.display()
        )),
        "tar",
    );
    for line in [
        "ConditionPathExists=/etc/rolecall/rolecall.toml",
        "EnvironmentFile=-/etc/default/rolecall",
        "ExecStartPre=/usr/bin/rolecall config check",
        "ExecStart=/usr/bin/rolecall run",
        "DynamicUser=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} not in\n{unit}");
    }
}

/// lintian, with no error; warnings are printed.
fn check_lintian(deb: &Path) {
    let out = output(Command::new("lintian").arg(deb), "apt-get install lintian");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(
        errors.is_empty() && out.status.success(),
        "lintian:\n{text}"
    );
    eprintln!(
        "lintian: {}",
        if text.trim().is_empty() {
            "clean"
        } else {
            &text
        }
    );
}

/// The installed unit: enabled, verified, and as hardened as the repository's.
fn check_installed_unit() {
    for file in FILES {
        assert!(Path::new(file).exists(), "{file} not installed");
    }
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants/rolecall.service");
    assert!(
        wants.is_symlink(),
        "the unit is not enabled: no {}",
        wants.display()
    );
    let unit = "/usr/lib/systemd/system/rolecall.service";
    run(
        Command::new("systemd-analyze").args(["verify", unit]),
        "apt-get install systemd",
    );
    let security = run(
        Command::new("systemd-analyze").args([
            "security",
            "--offline=true",
            "--threshold=25",
            unit,
        ]),
        "apt-get install systemd",
    );
    assert!(
        security.contains("Overall exposure level for rolecall.service"),
        "{security}"
    );
}

/// What the probe unit does inside the booted container; each answer in a file of /probe.
const PROBE: &str = r#"#!/bin/sh
exec >/probe/log 2>&1
set -x
systemctl is-enabled rolecall.service > /probe/enabled
systemctl start rolecall.service
systemctl show -p ActiveState -p ConditionResult rolecall.service > /probe/unconfigured
mkdir -p /etc/rolecall
cp /probe/rolecall.toml /etc/rolecall/rolecall.toml
echo ROLECALL_LOG_FORMAT=json >> /etc/default/rolecall
systemctl start rolecall.service
systemctl show -p ActiveState -p SubState -p StatusText rolecall.service > /probe/started
curl -sS --max-time 5 http://127.0.0.1:7071/livez > /probe/livez
SYSTEMD_COLORS=0 systemctl status --no-pager --lines=20 rolecall.service > /probe/status
systemctl stop rolecall.service
systemctl show -p ActiveState -p Result rolecall.service > /probe/stopped
echo done > /probe/done
"#;

/// The probe's unit, the container's only goal (`systemd.unit=`): powers the container off
/// when it ends, however it ends.
const PROBE_UNIT: &str = "[Unit]
Description=rolecall package probe
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/bin/sh /probe/probe.sh
";

/// A configuration rolecall runs on without any Redis: liveness never depends on Redis.
const CONFIG: &str = r#"[node]
name = "probe"
process = "rolecall-probe-node"

[[redis]]
name = "main"
master_name = "mymaster"
sentinels = ["127.0.0.1:26379"]

[agent]
listen = "127.0.0.1:7070"

[http]
listen = "127.0.0.1:7071"
"#;

/// Boots this machine's tree under systemd-nspawn into the probe; the probe's answers.
///
/// The tree is `/` seen through an overlay whose upper layer is a temporary directory: the
/// container sees the package `dpkg -i` installed here, and whatever it writes (its
/// configuration, journal, state) never reaches this machine; `redirect_dir=on` lets systemd
/// move a `/var/lib/rolecall` directory it finds into `/var/lib/private` (`DynamicUser=`), a
/// rename of a lower directory that overlayfs refuses without it. `--register=no --keep-unit`:
/// no machined and no transient scope, so no system bus is needed (on this machine PID 1 is
/// not systemd); `--link-journal=no`: the container has this machine's machine-id;
/// `--private-network`: its rolecall listens on a loopback of its own.
fn boot_probe(work: &Path, cleanup: &mut Cleanup) -> std::collections::HashMap<String, String> {
    let (upper, scratch, root, probe) = (
        work.join("upper"),
        work.join("work"),
        work.join("root"),
        work.join("probe"),
    );
    for d in [&upper, &scratch, &root, &probe] {
        std::fs::create_dir_all(d).unwrap();
    }
    run(
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir=/,upperdir={},workdir={},redirect_dir=on",
                upper.display(),
                scratch.display()
            ))
            .arg(&root),
        "mount is part of util-linux",
    );
    cleanup.overlay = Some(root.clone());
    std::fs::write(
        root.join("etc/systemd/system/rolecall-probe.service"),
        PROBE_UNIT,
    )
    .unwrap();
    std::fs::write(probe.join("probe.sh"), PROBE).unwrap();
    std::fs::write(probe.join("rolecall.toml"), CONFIG).unwrap();
    let log = std::fs::File::create(work.join("nspawn.log")).unwrap();
    let child = Command::new("systemd-nspawn")
        .arg(format!("--directory={}", root.display()))
        .args([
            "--register=no",
            "--keep-unit",
            "--link-journal=no",
            "--private-network",
        ])
        .arg(format!("--bind={}:/probe", probe.display()))
        .args(["--boot", "systemd.unit=rolecall-probe.service"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("systemd-nspawn: apt-get install systemd-container");
    cleanup.container = Some(child);
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let status = loop {
        let child = cleanup.container.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if status.is_some() {
        // Reaped: nothing left for the cleanup to kill.
        cleanup.container = None;
    }
    let boot_log = std::fs::read_to_string(work.join("nspawn.log")).unwrap_or_default();
    let probe_log = std::fs::read_to_string(probe.join("log")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "the container did not boot, probe and power off within {BOOT_TIMEOUT:?} ({status:?}):\n\
         {boot_log}\nprobe:\n{probe_log}"
    );
    let mut answers = std::collections::HashMap::new();
    for name in [
        "enabled",
        "unconfigured",
        "started",
        "livez",
        "status",
        "stopped",
        "done",
    ] {
        let text = std::fs::read_to_string(probe.join(name)).unwrap_or_else(|e| {
            panic!("the probe wrote no {name} ({e}):\n{probe_log}\n{boot_log}")
        });
        answers.insert(name.to_string(), text);
    }
    run(Command::new("umount").arg(&root), "umount");
    cleanup.overlay = None;
    answers
}

/// What the probe saw: enabled; inert without a configuration; with one, running (notified
/// ready) with its verdict in `systemctl status`; `/livez` ok; stopped cleanly.
fn check_probe(a: &std::collections::HashMap<String, String>) {
    assert_eq!(a["enabled"].trim(), "enabled");
    let unconfigured = &a["unconfigured"];
    assert!(
        unconfigured.contains("ConditionResult=no")
            && unconfigured.contains("ActiveState=inactive"),
        "without /etc/rolecall/rolecall.toml the unit must not start: {unconfigured}"
    );
    let started = &a["started"];
    assert!(
        started.contains("ActiveState=active") && started.contains("SubState=running"),
        "{started}\n{}",
        a["status"]
    );
    assert_eq!(a["livez"].trim(), "ok", "{}", a["status"]);
    let status = &a["status"];
    assert!(status.contains("Active: active (running)"), "{status}");
    assert!(
        status.contains("ExecStartPre=/usr/bin/rolecall config check")
            && status.contains("status=0/SUCCESS"),
        "{status}"
    );
    assert!(
        status.contains("Status: \""),
        "no STATUS= from rolecall: {status}"
    );
    // /etc/default/rolecall reaches rolecall: the probe set ROLECALL_LOG_FORMAT=json there.
    assert!(
        status.contains(r#""message":"rolecall started""#),
        "no JSON log line, so /etc/default/rolecall was not read: {status}"
    );
    let stopped = &a["stopped"];
    assert!(
        stopped.contains("ActiveState=inactive") && stopped.contains("Result=success"),
        "{stopped}"
    );
}

/// What installing the package makes besides its files: the unit's enablement.
const ENABLEMENT: &[&str] = &[
    "/etc/systemd/system/multi-user.target.wants/rolecall.service",
    "/var/lib/systemd/deb-systemd-helper-enabled/rolecall.service.dsh-also",
    "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/rolecall.service",
    "/usr/share/doc/rolecall",
];

/// What systemd makes for the unit at run time (`StateDirectory=` under `DynamicUser=`, and
/// `RuntimeDirectory=` kept across restarts), which a purge removes too.
const STATE: &[&str] = &[
    "/var/lib/private/rolecall",
    "/var/lib/rolecall",
    "/run/rolecall",
];

fn exists(path: &str) -> bool {
    Path::new(path).exists() || Path::new(path).is_symlink()
}

/// `dpkg --purge` removes the package, its conffile, the unit's enablement and the state
/// systemd made for it at run time, made here as systemd would: DynamicUser's
/// /var/lib/private/rolecall and the /var/lib/rolecall link to it. (A /var/lib/rolecall that
/// is already a directory, the default `state_dir` of a rolecall run as root outside systemd,
/// is rolecall's state too, and goes as well.)
fn purge_and_check(cleanup: &mut Cleanup) {
    let private_existed = exists("/var/lib/private");
    std::fs::create_dir_all("/var/lib/private/rolecall").unwrap();
    std::fs::write("/var/lib/private/rolecall/agent-probe.state", "drain\n").unwrap();
    if !exists("/var/lib/rolecall") {
        std::os::unix::fs::symlink("private/rolecall", "/var/lib/rolecall").unwrap();
    }
    std::fs::create_dir_all("/run/rolecall").unwrap();
    run(Command::new("dpkg").args(["--purge", "rolecall"]), "dpkg");
    cleanup.installed = false;
    if !private_existed {
        // Made by this test, not by the package: an empty directory the purge leaves.
        let _ = std::fs::remove_dir("/var/lib/private");
    }
    assert!(!installed(), "dpkg still knows rolecall after --purge");
    let left: Vec<&str> = FILES
        .iter()
        .chain(ENABLEMENT)
        .chain(STATE)
        .copied()
        .filter(|p| exists(p))
        .collect();
    assert!(left.is_empty(), "left behind by dpkg --purge: {left:?}");
}

#[test]
fn the_debian_package_installs_runs_under_systemd_and_purges_without_a_trace() {
    require_tools();
    assert!(
        !installed(),
        "the rolecall package is installed on this machine; this test installs and purges it: \
         `dpkg --purge rolecall` first"
    );
    for path in ENABLEMENT.iter().chain(FILES) {
        assert!(
            !exists(path),
            "{path} exists before the package is installed: remove it first"
        );
    }
    let work = tempfile::tempdir().unwrap();
    let deb = build(&work.path().join("deb"));
    check_contents(&deb);
    check_lintian(&deb);

    let mut cleanup = Cleanup {
        container: None,
        overlay: None,
        installed: true,
    };
    run(Command::new("dpkg").arg("-i").arg(&deb), "dpkg");
    check_installed_unit();
    let answers = boot_probe(work.path(), &mut cleanup);
    check_probe(&answers);
    purge_and_check(&mut cleanup);
}
