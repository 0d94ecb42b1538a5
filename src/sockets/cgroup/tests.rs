//! The cgroup lookup on trees made in a temporary directory (the walks, the memory of found
//! directories, unit names), and on this machine's real hierarchies: a child process put in a
//! cgroup named like a unit is found by [`discover`], in the cgroup v2 hierarchy and in the
//! hybrid layout's `name=systemd` one. The real ones need root and mounted cgroups, as CI has;
//! without them they fail, saying so, rather than pass untested.

use std::fs;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::mountinfo::Kind;
use super::*;
use crate::sockets::discover::discover;
use crate::sockets::pids::NodeSelector;
use crate::sockets::testutil::{Reaped, connected_child, our_pid};

#[test]
fn unit_names_are_checked() {
    let long = format!("{}.service", "a".repeat(250));
    let cases: &[(&str, Option<&str>)] = &[
        ("centrifugo.service", None),
        ("centrifugo@main.service", None),
        ("session-4.scope", None),
        ("kubepods-besteffort.slice", None),
        ("a\\x2db:c_d.service", None),
        ("", Some("empty unit name")),
        ("system.slice/centrifugo.service", Some("is a path")),
        ("../x.service", Some("is a path")),
        (
            "centrifugo",
            Some("does not end in .service, .scope, .slice"),
        ),
        ("centrifugo.socket", Some("does not end in")),
        (".service", Some("nothing before its suffix")),
        ("centri fugo.service", Some("holds ' '")),
        ("centrifugø.service", Some("holds 'ø'")),
        (&long, Some("longer than 255 bytes")),
    ];
    for (name, want) in cases {
        match (check_unit_name(name), want) {
            (Ok(()), None) => {}
            (Err(why), Some(want)) => assert!(why.to_string().contains(want), "{name:?}: {why}"),
            (got, _) => panic!("{name:?}: got {got:?}, want {want:?}"),
        }
    }
}

/// Makes the cgroup directories `paths` (relative to `root`), each with a `cgroup.procs`
/// holding `pids`, and an empty `cgroup.procs` in `root` if it has none.
fn make_tree(root: &Path, paths: &[&str], pids: &[u32]) {
    let procs: String = pids.iter().map(|p| format!("{p}\n")).collect();
    if !root.join("cgroup.procs").exists() {
        fs::write(root.join("cgroup.procs"), "").unwrap();
    }
    for path in paths {
        let dir = root.join(path);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cgroup.procs"), &procs).unwrap();
    }
}

#[test]
fn a_unit_is_found_at_its_conventional_place_or_by_a_walk_of_slices() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "centrifugo.service",
            "system.slice/centrifugo.service",
            Some("system.slice"),
        ),
        (
            "c.service",
            "apps.slice/apps-web.slice/c.service",
            Some("apps.slice/apps-web.slice"),
        ),
        (
            "c.service",
            "user.slice/user-1000.slice/user@1000.service/app.slice/c.service",
            Some("user.slice/user-1000.slice/user@1000.service/app.slice"),
        ),
        (
            "apps-web.slice",
            "apps.slice/apps-web.slice",
            Some("apps.slice"),
        ),
        ("init.scope", "init.scope", Some("")),
        // Inside a container's scope, or a cgroup systemd did not name: another's units.
        (
            "c.service",
            "machine.slice/m.scope/system.slice/c.service",
            None,
        ),
        ("c.service", "docker/abc/c.service", None),
        // As deep as the search goes (SEARCH_DEPTH levels), and deeper.
        (
            "c.service",
            "a.slice/b.slice/c.slice/d.slice/e.slice/f.slice/g.slice/c.service",
            Some("a.slice/b.slice/c.slice/d.slice/e.slice/f.slice/g.slice"),
        ),
        (
            "c.service",
            "a.slice/b.slice/c.slice/d.slice/e.slice/f.slice/g.slice/h.slice/c.service",
            None,
        ),
    ];
    for (unit, path, parent) in cases {
        let root = tempfile::tempdir().unwrap();
        make_tree(root.path(), &[path, "system.slice/other.service"], &[]);
        let found = find_unit_dir(root.path(), unit).unwrap();
        let want = parent.map(|p| root.path().join(p).join(unit));
        assert_eq!(found, want, "{unit} at {path}");
    }
}

#[test]
fn a_units_pids_are_those_of_its_cgroup_and_the_cgroups_below_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("system.slice/c.service");
    make_tree(root.path(), &["system.slice/c.service"], &[our_pid(), 0]);
    make_tree(&dir, &["payload", "payload/deeper"], &[our_pid(), 1]);
    let mut listed = pids_below(&dir, "c.service").unwrap().unwrap();
    listed.sort_unstable();
    let mut want = vec![1, 1, our_pid(), our_pid(), our_pid()];
    want.sort_unstable();
    assert_eq!(
        listed, want,
        "every pid of the three cgroups, without the invisible 0"
    );
    want.dedup();
    assert_eq!(running_pids_in(&dir, "c.service").unwrap(), Some(want));
    assert_eq!(
        pids_below(&root.path().join("gone"), "c.service").unwrap(),
        None
    );
}

#[test]
fn a_found_directory_is_remembered_until_it_is_gone() {
    let root = tempfile::tempdir().unwrap();
    let hierarchies = || {
        Ok(vec![Hierarchy {
            kind: Kind::Unified,
            mount: root.path().to_path_buf(),
        }])
    };
    let dirs = UnitDirs::new();
    let unit = "c.service";
    make_tree(root.path(), &["apps.slice/c.service"], &[our_pid()]);
    assert_eq!(dirs.pids(unit, hierarchies).unwrap(), vec![our_pid()]);
    let first = root.path().join("apps.slice/c.service");
    assert_eq!(dirs.remembered(unit), Some(first.clone()));

    // A second cgroup at the conventional place is not looked for while the first has pids.
    make_tree(root.path(), &["system.slice/c.service"], &[our_pid()]);
    dirs.pids(unit, || {
        panic!("searched although the remembered cgroup has pids")
    })
    .unwrap();
    assert_eq!(dirs.remembered(unit), Some(first.clone()));

    fs::remove_dir_all(&first).unwrap();
    assert_eq!(dirs.pids(unit, hierarchies).unwrap(), vec![our_pid()]);
    assert_eq!(
        dirs.remembered(unit),
        Some(root.path().join("system.slice/c.service"))
    );
}

#[test]
fn a_unit_without_a_running_process_is_missing() {
    let root = tempfile::tempdir().unwrap();
    let exited = {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait for true");
        pid
    };
    make_tree(root.path(), &["system.slice/c.service"], &[exited]);
    let hierarchies = || {
        Ok(vec![Hierarchy {
            kind: Kind::Unified,
            mount: root.path().to_path_buf(),
        }])
    };
    let dirs = UnitDirs::new();
    let cases = [
        (
            "c.service",
            "systemd unit c.service has no running process (its cgroup ",
        ),
        ("d.service", "no cgroup for systemd unit d.service under "),
        ("d", "not a systemd unit name: \"d\" does not end in"),
    ];
    for (unit, want) in cases {
        match dirs.pids(unit, hierarchies) {
            Err(DiscoverError::NodeMissing(message)) => {
                assert!(message.starts_with(want), "{unit}: {message}")
            }
            other => panic!("{unit}: expected NodeMissing, got {other:?}"),
        }
        assert_eq!(dirs.remembered(unit), None);
    }
    match dirs.pids("c.service", || Ok(Vec::new())) {
        Err(DiscoverError::Unreadable(message)) => {
            assert!(message.contains("no cgroup2 or name=systemd"), "{message}")
        }
        other => panic!("no hierarchy: expected Unreadable, got {other:?}"),
    }
}

/// What to do without root or cgroups, for a test that needs them.
const HOW_TO_RUN: &str = "run the tests as root, with cgroup2 mounted (and, for the hybrid \
                          layout's test, the v1 hierarchy name=systemd)";

/// A cgroup named like a unit, in a slice of its own, made for one test in one hierarchy, with
/// the child process the test puts in it. Dropping it kills and reaps the child and removes both
/// cgroups, even when the test fails.
struct TestUnit {
    unit: String,
    dirs: Vec<PathBuf>,
    child: Option<Reaped>,
}

impl TestUnit {
    fn create(kind: Kind) -> TestUnit {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let hierarchies = mounted_hierarchies().expect("read /proc/self/mountinfo");
        let Some(hierarchy) = hierarchies.iter().find(|h| h.kind == kind) else {
            panic!("no {kind} hierarchy in /proc/self/mountinfo: {HOW_TO_RUN}");
        };
        let name = format!(
            "rolecall-test-{}-{}",
            our_pid(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let slice = hierarchy.mount.join(format!("{name}.slice"));
        let unit = format!("{name}.service");
        let mut made = TestUnit {
            dirs: Vec::new(),
            child: None,
            unit: unit.clone(),
        };
        for dir in [slice.clone(), slice.join(&unit)] {
            if let Err(err) = fs::create_dir(&dir) {
                panic!(
                    "cannot create the cgroup {}: {err}; {HOW_TO_RUN}",
                    dir.display()
                );
            }
            made.dirs.push(dir);
        }
        made
    }

    /// Moves `child` into the unit's cgroup.
    fn enter(&mut self, child: Reaped) {
        let pid = child.0.id();
        self.child = Some(child);
        let procs = self.dirs[1].join("cgroup.procs");
        if let Err(err) = fs::write(&procs, pid.to_string()) {
            panic!(
                "cannot move pid {pid} into {}: {err}; {HOW_TO_RUN}",
                procs.display()
            );
        }
    }
}

impl Drop for TestUnit {
    fn drop(&mut self) {
        drop(self.child.take());
        for dir in self.dirs.iter().rev() {
            // A cgroup whose last process was just reaped may still be busy for a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(err) = fs::remove_dir(dir) {
                if Instant::now() > deadline {
                    eprintln!("cannot remove the test cgroup {}: {err}", dir.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Puts a connected child in a unit's cgroup in the `kind` hierarchy and checks that the
/// unit's discovery finds that child and its connection, and nothing of this test process.
fn unit_in_hierarchy_is_discovered(kind: Kind) {
    let mut unit = TestUnit::create(kind);
    let (child, childs, _ours) = connected_child();
    let pid = child.0.id();
    unit.enter(child);
    let selector = NodeSelector::SystemdUnit(unit.unit.clone());
    let found = discover(&selector).unwrap_or_else(|err| panic!("discover({selector}): {err}"));
    assert_eq!(found.pids, vec![pid], "{found:?}");
    assert_eq!(found.connections, vec![childs], "{found:?}");
    assert!(!found.pids.contains(&our_pid()));
}

#[test]
fn a_unit_in_the_cgroup_v2_hierarchy_is_discovered() {
    unit_in_hierarchy_is_discovered(Kind::Unified);
}

#[test]
fn a_unit_in_the_hybrid_layouts_name_systemd_hierarchy_is_discovered() {
    unit_in_hierarchy_is_discovered(Kind::NamedSystemd);
}

#[test]
fn a_unit_nobody_runs_is_missing_and_named() {
    let unit = format!("rolecall-test-{}-nobody.service", our_pid());
    match discover(&NodeSelector::SystemdUnit(unit.clone())) {
        Err(DiscoverError::NodeMissing(message)) => {
            assert!(
                message.starts_with(&format!("no cgroup for systemd unit {unit} under ")),
                "{message}"
            )
        }
        other => panic!("expected NodeMissing, got {other:?}"),
    }
}
