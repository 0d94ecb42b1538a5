//! What a person reads, against the real daemon: `rolecall status` (text, `--json`, `--watch`)
//! and the page at `/` rendered by a real browser (Debian's headless Chromium), for a healthy
//! node and for the same node stuck on the old master after a failover; the verdict changes in
//! `/status`; `rolecall maint` through the flag file and through the token endpoint; a daemon
//! that cannot be reached.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{DemoNode, Rolecall, RolecallConfig, Topology, free_port, poll_for, run_rolecall};

/// From start to a confirmed verdict: a few checks of 250 ms; generous for a loaded machine.
const VERDICT_TIMEOUT: Duration = Duration::from_secs(20);
/// After a failover, until Sentinel demotes the old master (10–20 s) and rolecall confirms.
const DEMOTED_VERDICT_TIMEOUT: Duration = Duration::from_secs(60);
/// A `rolecall status` or `maint` run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Chromium's start, page load and DOM dump.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);
/// Until `/status` shows a maintenance switch the command changed.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's whole output, for assertion messages.
fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The headless browser: `CHROMIUM_BIN`, else Debian's `/usr/bin/chromium`.
fn chromium() -> PathBuf {
    let bin = std::env::var_os("CHROMIUM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        bin.exists(),
        "{} not found: install Debian's Chromium (`apt-get install -y chromium`; tests/run.sh \
         does) or set CHROMIUM_BIN",
        bin.display()
    );
    bin
}

/// The DOM of `url` as headless Chromium renders it (`--dump-dom`), in a fresh profile, with
/// nothing but the page itself fetched. Bounded by [`BROWSER_TIMEOUT`]; the browser's whole
/// process group is killed if it runs over.
fn browser_dom(url: &str) -> String {
    let profile = tempfile::tempdir().expect("a browser profile dir");
    let out = profile.path().join("dom.html");
    let err = profile.path().join("stderr.log");
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!(
        "--user-data-dir={}",
        profile.path().join("profile").display()
    ))
    .arg("--dump-dom")
    .arg(url)
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(&out).expect("create dom.html"))
    .stderr(std::fs::File::create(&err).expect("create stderr.log"))
    .process_group(0);
    let mut child = cmd.spawn().expect("start chromium");
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Chromium leaves helper processes in its group: end them all, whatever happened.
    let group = i32::try_from(child.id()).expect("a pid");
    kill_group(group);
    let _ = child.wait();
    let dom = std::fs::read_to_string(&out).unwrap_or_default();
    let log = std::fs::read_to_string(&err).unwrap_or_default();
    match status {
        Some(s) if s.success() && !dom.is_empty() => dom,
        Some(s) => panic!("chromium {url}: {s}\n--- dom ---\n{dom}\n--- stderr ---\n{log}"),
        None => panic!("chromium {url}: no DOM within {BROWSER_TIMEOUT:?}\n--- stderr ---\n{log}"),
    }
}

/// SIGKILL to the process group `pgid` (ignored if it is already gone).
fn kill_group(pgid: i32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
}

/// The text of the element with `id` in `dom` (its inner HTML up to the next tag).
fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let at = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no element #{id} in the page:\n{dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').expect("the tag ends") + 1;
    let end = rest[start..].find('<').expect("a closing tag") + start;
    &rest[start..end]
}

/// `rolecall status ARGS` against `r` (by its config file unless `args` name a URL).
fn status_command(r: &Rolecall, args: &[&str]) -> Output {
    if args.contains(&"--url") {
        let mut all = vec!["status"];
        all.extend_from_slice(args);
        run_rolecall(&all, COMMAND_TIMEOUT)
    } else {
        let mut all = vec!["status"];
        all.extend_from_slice(args);
        r.command(&all, COMMAND_TIMEOUT)
    }
}

/// Sentinel addresses nothing listens on: a daemon for the tests that need no Redis.
fn dead_sentinels() -> Vec<SocketAddr> {
    (0..3)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
        .collect()
}

/// A token file only its owner may read, as rolecall requires.
fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("maintenance.token");
    std::fs::write(&path, format!("{token}\n")).expect("write the token");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path
}

/// Waits until `/status` shows maintenance `on` (or off); returns its `maintenance` object.
fn wait_maintenance(r: &mut Rolecall, on: bool) -> serde_json::Value {
    r.wait_for_status(&format!("maintenance on = {on}"), SWITCH_TIMEOUT, |s| {
        s["maintenance"]["on"] == on
    })["maintenance"]
        .clone()
}

// ---------------------------------------------------------------------------------------------
// rolecall status and the page

/// The node line, the group row and the page of a healthy node on the master.
fn assert_healthy(r: &Rolecall, master: SocketAddr, replica: SocketAddr) {
    let out = status_command(r, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("node pinned: IN ok since ")
            && lines[0].contains("; maintenance off; why: "),
        "{text}"
    );
    assert!(lines[2].starts_with("GROUP "), "{text}");
    let row = lines[3];
    assert!(row.starts_with("mymaster  ok  "), "{text}");
    assert!(row.contains(&format!("{master} master")), "{text}");
    assert!(row.contains("3/3 agree"), "{text}");

    let dom = browser_dom(&format!("http://{}/", r.http_addr()));
    assert_eq!(element_text(&dom, "rotation"), "IN", "{dom}");
    assert_eq!(element_text(&dom, "verdict"), "ok", "{dom}");
    assert_eq!(element_text(&dom, "node-name"), "pinned", "{dom}");
    assert!(dom.contains("<header id=\"node\" class=\"in\">"), "{dom}");
    assert!(
        dom.contains(&format!("<td class=\"role-master\">{master}</td>")),
        "{dom}"
    );
    // The replica the sentinels list, which the node does not reach.
    assert!(
        dom.contains(&format!(
            "<tr><td class=\"role-replica\">{replica}</td><td class=\"role-replica\">replica</td>"
        )),
        "{dom}"
    );
}

/// A look that shows the node's connection on `old`: the pinned node redials after every
/// READONLY, so a look may fall between its connections; looks again until one does.
fn look_on<T>(what: &str, old: SocketAddr, mut look: impl FnMut() -> (bool, T, String)) -> T {
    let mut last = String::new();
    let seen = poll_for(VERDICT_TIMEOUT, || {
        let (on_old, value, shown) = look();
        last = shown;
        on_old.then_some(value)
    });
    seen.unwrap_or_else(|| panic!("{what} never showed the node's connection on {old}:\n{last}"))
}

/// The node line, the group row, the JSON and the page of the node stuck on `old`.
fn assert_stuck(r: &Rolecall, old: SocketAddr, new: SocketAddr) {
    let url = format!("http://{}", r.http_addr());
    let text = look_on("rolecall status", old, || {
        let out = status_command(r, &["--url", &url]);
        assert_eq!(out.status.code(), Some(2), "CRITICAL\n{}", show(&out));
        let text = stdout(&out);
        (text.contains(&format!("{old} replica")), text.clone(), text)
    });
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("node pinned: OUT stuck_on_replica since "),
        "{text}"
    );
    assert!(
        lines[0].contains(&old.to_string()) && lines[0].contains(&new.to_string()),
        "the reason names both servers: {text}"
    );
    let row = lines[3];
    assert!(row.starts_with("mymaster  stuck_on_replica  "), "{text}");
    assert!(row.contains(&format!("{new}  3/3 agree")), "{text}");
    assert!(row.contains(&format!("{old} replica")), "{text}");
    assert!(
        text.contains("\nrecent changes (oldest first):\n"),
        "{text}"
    );
    let changes: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("recent changes"))
        .skip(1)
        .collect();
    // Before the failover the node was in, ok (after the first check's `unknown`).
    assert!(changes.iter().any(|l| l.contains("  IN   ok  ")), "{text}");
    assert!(
        changes
            .last()
            .is_some_and(|l| l.contains("  OUT  stuck_on_replica  ")),
        "{text}"
    );

    let replica_cell = format!("<td>{old}</td><td class=\"role-replica\">replica</td>");
    let dom = look_on("the page", old, || {
        let dom = browser_dom(&format!("{url}/"));
        (dom.contains(&replica_cell), dom.clone(), dom)
    });
    assert_eq!(element_text(&dom, "rotation"), "OUT", "{dom}");
    assert_eq!(element_text(&dom, "verdict"), "stuck_on_replica", "{dom}");
    assert!(
        element_text(&dom, "reason").contains(&old.to_string()),
        "{dom}"
    );
    assert!(dom.contains("<header id=\"node\" class=\"out\">"), "{dom}");
    assert!(
        dom.contains("<tr class=\"connection bad\"><td>"),
        "the node's connection on the replica is marked: {dom}"
    );
    assert!(
        dom.contains(&format!("<td class=\"role-master\">{new}</td>")),
        "{dom}"
    );
}

/// `--json` is the `/status` document, with the changes: times in RFC 3339, causes, in order.
fn assert_changes_in_json(r: &Rolecall, old: SocketAddr) {
    let old = old.to_string();
    let out = status_command(r, &["--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let j: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(j["verdict"], "stuck_on_replica", "{j:#}");
    let changes = j["changes"].as_array().expect("changes");
    assert!(changes.len() >= 2 && changes.len() <= 20, "{j:#}");
    let last = &changes[changes.len() - 1];
    assert!(
        changes
            .iter()
            .any(|c| c["verdict"] == "ok" && c["in_rotation"] == true),
        "{j:#}"
    );
    assert_eq!(last["verdict"], "stuck_on_replica");
    // The cause as it was at the change (the node may have redialled since: another port).
    let cause = last["reason"].as_str().unwrap_or("");
    assert!(
        cause.contains("goes to a replica") && cause.contains(old.as_str()),
        "{j:#}"
    );
    for c in changes {
        let at = c["at"].as_str().expect("at");
        let parsed = humantime::parse_rfc3339(at).expect("RFC 3339");
        let ms = parsed
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert_eq!(c["at_unix_ms"].as_u64(), Some(ms), "{c}");
    }
    let times: Vec<u64> = changes
        .iter()
        .filter_map(|c| c["at_unix_ms"].as_u64())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {times:?}"
    );
}

#[test]
fn status_and_the_page_show_a_healthy_node_and_then_the_same_node_stuck_after_a_failover() {
    let topology = Topology::start(1, 3);
    let master = topology.master_addr();
    let node = DemoNode::pin(master);
    let mut r = RolecallConfig::new()
        .pid(node.pid())
        .node_name("pinned")
        .topology(&topology)
        .start();
    r.wait_for_verdict("ok", VERDICT_TIMEOUT);
    assert_healthy(&r, master, topology.replicas()[0].addr());

    let (old, new) = topology.failover();
    r.wait_for_verdict("stuck_on_replica", DEMOTED_VERDICT_TIMEOUT);
    assert_stuck(&r, old, new);
    assert_changes_in_json(&r, old);

    // --watch: a look per interval, as many as --count; the exit code is the last look's.
    let out = status_command(&r, &["--watch", "--count", "3", "--interval", "100ms"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let text = stdout(&out);
    assert_eq!(
        text.matches("node pinned: OUT stuck_on_replica").count(),
        3,
        "{text}"
    );
    let out = status_command(
        &r,
        &["--json", "--watch", "--count", "2", "--interval", "50ms"],
    );
    let docs: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON document per line"))
        .collect();
    assert_eq!(docs.len(), 2, "{}", show(&out));
}

#[test]
fn a_daemon_that_cannot_be_reached_is_unknown_with_a_clear_message() {
    let port = free_port();
    let out = run_rolecall(
        &["status", "--url", &format!("http://127.0.0.1:{port}")],
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!(
            "UNKNOWN - cannot reach rolecall at http://127.0.0.1:{port}/status: "
        )),
        "{}",
        show(&out)
    );
    // With --json stdout stays JSON: nothing there, the message on stderr.
    let out = run_rolecall(
        &[
            "status",
            "--json",
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ],
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach rolecall"));
    // --url is asked instead of the file, even one named in the environment.
    let out = support::run_rolecall_env(
        &["status", "--url", &format!("http://127.0.0.1:{port}")],
        &[("ROLECALL_CONFIG", "/nonexistent/rolecall.toml")],
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    // A URL rolecall does not serve, and a config without [http], are refused before asking.
    let out = run_rolecall(&["status", "--url", "https://127.0.0.1:1"], COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rolecall.toml");
    std::fs::write(&config, "[node]\nname = \"n\"\n").unwrap();
    let out = run_rolecall(
        &["status", "--config", &config.display().to_string()],
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no [http] listen"),
        "{}",
        show(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// rolecall maint

#[test]
fn maint_goes_through_the_flag_file_with_its_reason_and_back() {
    let mut r = RolecallConfig::new()
        .pid(std::process::id())
        .redis_group("main", "mymaster", &dead_sentinels())
        .extra("[maintenance]\nfile = \"{dir}/run/maintenance\"")
        .start();
    let flag = r.dir().join("run").join("maintenance");
    let out = r.command(
        &["maint", "on", "--reason", "disk swap, back at 15:00"],
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        std::fs::read_to_string(&flag).unwrap(),
        "disk swap, back at 15:00\n"
    );
    let said = stdout(&out);
    assert!(
        said.starts_with(&format!(
            "flag file {} written; maintenance on since ",
            flag.display()
        )) && said.contains(&format!(
            "by flag file {}: disk swap, back at 15:00",
            flag.display()
        )),
        "{said}"
    );
    let m = wait_maintenance(&mut r, true);
    assert_eq!(m["by_file"], true, "{m}");
    assert_eq!(m["note"], "disk swap, back at 15:00", "{m}");
    assert_eq!(r.http_get("/readyz").0, 503);
    let (_, verbose) = r.http_get("/readyz?verbose");
    assert!(
        verbose.contains("exists: disk swap, back at 15:00"),
        "{verbose}"
    );

    let out = r.command(&["maint", "status"], COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("maintenance on since "),
        "{}",
        show(&out)
    );
    let out = r.command(&["status"], COMMAND_TIMEOUT);
    assert!(
        stdout(&out).contains(": disk swap, back at 15:00; why: "),
        "{}",
        show(&out)
    );

    let out = r.command(&["maint", "off"], COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!flag.exists());
    assert_eq!(
        stdout(&out),
        format!("flag file {} removed; maintenance off\n", flag.display())
    );
    assert_eq!(
        wait_maintenance(&mut r, false)["note"],
        serde_json::Value::Null
    );
    let out = r.command(&["maint", "status"], COMMAND_TIMEOUT);
    assert_eq!(stdout(&out), "maintenance off\n", "{}", show(&out));
}

#[test]
fn maint_goes_through_the_token_endpoint_when_there_is_no_flag_file() {
    let secrets = tempfile::tempdir().unwrap();
    let token = token_file(secrets.path(), "let-me-in");
    let mut r = RolecallConfig::new()
        .pid(std::process::id())
        .redis_group("main", "mymaster", &dead_sentinels())
        .extra(&format!("[maintenance]\ntoken_file = {:?}", token))
        .start();
    let out = r.command(
        &["maint", "on", "--reason", "kernel update"],
        COMMAND_TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        stdout(&out).starts_with("switched on through POST /maintenance; maintenance on since ")
            && stdout(&out).ends_with("by POST /maintenance: kernel update\n"),
        "{}",
        show(&out)
    );
    let m = wait_maintenance(&mut r, true);
    assert_eq!(
        (&m["by_api"], &m["note"]),
        (&true.into(), &"kernel update".into())
    );
    let reply = r.agent(Some("\n"));
    assert!(
        reply.starts_with(
            "maint up #maintenance: switched on through POST /maintenance: kernel update"
        ),
        "{reply:?}"
    );

    let out = r.command(&["maint", "off"], COMMAND_TIMEOUT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        stdout(&out),
        "switched off through DELETE /maintenance; maintenance off\n"
    );
    wait_maintenance(&mut r, false);
}

#[test]
fn maint_without_a_switch_configured_says_so_and_changes_nothing() {
    let r = RolecallConfig::new()
        .pid(std::process::id())
        .redis_group("main", "mymaster", &dead_sentinels())
        .start();
    for action in [
        &["maint", "on"][..],
        &["maint", "off"],
        &["maint", "status"],
    ] {
        let out = r.command(action, COMMAND_TIMEOUT);
        assert_eq!(out.status.code(), Some(64), "{}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("neither [maintenance] file nor [maintenance] token_file is configured"),
            "{}",
            show(&out)
        );
    }
    assert_eq!(r.status()["maintenance"]["on"], false);
}
