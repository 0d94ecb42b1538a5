//! The shipped Kubernetes example (`deploy/kubernetes/`) stays right: every manifest passes
//! kubernetes-validate's strict schemas for the oldest Kubernetes with native sidecars and a
//! recent one, offline (the schemas come with the package); the ConfigMap's `rolecall.toml` is
//! accepted by `rolecall config check`; and the Deployment runs rolecall the way the README
//! says (a native sidecar, probed on its `[http]` port, its files mounted where the
//! configuration names them, the password files not readable by every user).
//!
//! The YAML is read with Python's `yaml` module, which kubernetes-validate depends on: the
//! documents come out as JSON, as Kubernetes itself reads them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Kubernetes versions the manifests are validated against: 1.29, the first with native
/// sidecars on by default, and a recent one.
const VERSIONS: [&str; 2] = ["1.29.0", "1.34.0"];

const INSTALL_HINT: &str = "kubernetes-validate is not installed for python3: install it with \
     `python3 -m pip install kubernetes-validate` (tests/run.sh does it)";

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// Every manifest of the example, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(example_dir())
        .expect("deploy/kubernetes/ is readable")
        .map(|e| e.expect("deploy/kubernetes/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifest in deploy/kubernetes/");
    files
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `python3 -m kubernetes_validate ARGS`; fails with the install hint when it is missing.
fn kubernetes_validate(args: &[&str]) -> Output {
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {INSTALL_HINT}"));
    let said = text(&out);
    assert!(
        !said.contains("No module named kubernetes_validate"),
        "{INSTALL_HINT}\n{said}"
    );
    out
}

/// The YAML documents of `file`, as JSON values (empty documents left out).
fn documents(file: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1]) as f:\n    \
                 docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
             json.dump(docs, sys.stdout)",
        ])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {INSTALL_HINT}"));
    assert!(
        out.status.success(),
        "{} is not YAML, or Python's yaml module is missing ({INSTALL_HINT}):\n{}",
        file.display(),
        text(&out)
    );
    serde_json::from_slice(&out.stdout).expect("python3 prints JSON")
}

/// Every document of the example with this `kind`.
fn of_kind(kind: &str) -> Vec<Value> {
    manifests()
        .iter()
        .flat_map(|f| documents(f))
        .filter(|d| d["kind"] == kind)
        .collect()
}

/// The `rolecall.toml` of the example's ConfigMap, and the ConfigMap's name.
fn shipped_config() -> (String, String) {
    let found: Vec<(String, String)> = of_kind("ConfigMap")
        .into_iter()
        .filter_map(|cm| {
            let toml = cm["data"]["rolecall.toml"].as_str()?.to_string();
            Some((cm["metadata"]["name"].as_str()?.to_string(), toml))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one ConfigMap of deploy/kubernetes/ holds rolecall.toml"
    );
    found.into_iter().next().unwrap()
}

/// The password and token files a configuration names, each once.
fn secret_files(config: &toml::Table) -> Vec<String> {
    let mut files = Vec::new();
    let groups = config
        .get("redis")
        .and_then(|r| r.as_array())
        .cloned()
        .unwrap_or_default();
    for g in &groups {
        for key in ["password_file", "sentinel_password_file"] {
            if let Some(p) = g.get(key).and_then(|p| p.as_str()) {
                files.push(p.to_string());
            }
        }
    }
    if let Some(p) = config
        .get("maintenance")
        .and_then(|m| m.get("token_file"))
        .and_then(|p| p.as_str())
    {
        files.push(p.to_string());
    }
    // One file may serve both passwords.
    files.sort();
    files.dedup();
    files
}

#[test]
fn every_manifest_passes_strict_schema_validation() {
    let version = kubernetes_validate(&["--version"]);
    assert!(
        version.status.success(),
        "{INSTALL_HINT}\n{}",
        text(&version)
    );
    let mut failures = Vec::new();
    for file in manifests() {
        let path = file.to_string_lossy().to_string();
        let mut args = vec!["--strict"];
        for v in VERSIONS {
            args.extend(["-k", v]);
        }
        args.push(&path);
        let out = kubernetes_validate(&args);
        let said = text(&out);
        // A kind or apiVersion without a schema is only a WARN line with exit 0: count it as
        // a failure too, and want one "passed" line per resource and version.
        let passed = said.lines().filter(|l| l.starts_with("INFO ")).count();
        let resources = documents(&file).len();
        let other = said.lines().any(|l| !l.starts_with("INFO "));
        if !out.status.success() || other || resources == 0 || passed != resources * VERSIONS.len()
        {
            failures.push(format!(
                "{path} ({resources} resource(s), {passed} passed):\n{said}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "kubernetes-validate --strict -k {}:\n{}",
        VERSIONS.join(" -k "),
        failures.join("\n")
    );
}

#[test]
fn the_configmaps_rolecall_toml_passes_config_check() {
    let (_, original) = shipped_config();
    let parsed: toml::Table = toml::from_str(&original)
        .unwrap_or_else(|e| panic!("rolecall.toml of the ConfigMap is not TOML: {e}"));
    // The files it names, written where the test can: the same text with their paths moved.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = original.clone();
    for (i, path) in secret_files(&parsed).iter().enumerate() {
        let name = Path::new(path).file_name().expect("a file name").to_owned();
        let local = dir.path().join(format!("{i}-{}", name.to_string_lossy()));
        fs::write(&local, "not-a-real-password\n").expect("write a password file");
        fs::set_permissions(&local, fs::Permissions::from_mode(0o600)).expect("chmod 0600");
        let quoted = format!("\"{path}\"");
        assert!(config.contains(&quoted), "{path} not quoted in the config");
        config = config.replace(&quoted, &format!("\"{}\"", local.display()));
    }
    let file = dir.path().join("rolecall.toml");
    fs::write(&file, &config).expect("write rolecall.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_rolecall"))
        .args(["config", "check", "--config"])
        .arg(&file)
        .output()
        .expect("run rolecall config check");
    let said = text(&out);
    assert!(
        out.status.success(),
        "rolecall config check refused the ConfigMap's rolecall.toml:\n{said}\n--- as checked:\n{config}"
    );
    // Runnable as it is (a warning would mean `rolecall run` refuses it), and a sidecar.
    assert!(out.stderr.is_empty(), "{said}");
    assert!(said.contains("by network namespace"), "{said}");
}

/// The port of an `[http] listen` address.
fn listen_port(config: &toml::Table) -> u64 {
    let listen = config
        .get("http")
        .and_then(|h| h.get("listen"))
        .and_then(|l| l.as_str())
        .expect("rolecall.toml has [http] listen: the kubelet probes it");
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("[http] listen has a port")
}

#[test]
fn the_deployment_runs_rolecall_as_a_probed_native_sidecar_with_its_files() {
    let (configmap, toml_text) = shipped_config();
    let config: toml::Table = toml::from_str(&toml_text).expect("rolecall.toml is TOML");
    assert_eq!(
        config["node"].get("namespace").and_then(|n| n.as_bool()),
        Some(true),
        "a sidecar finds the node by [node] namespace = true"
    );
    let deployments = of_kind("Deployment");
    assert_eq!(deployments.len(), 1, "one Deployment in deploy/kubernetes/");
    let pod = &deployments[0]["spec"]["template"]["spec"];
    let sidecar = pod["initContainers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "rolecall"))
        .expect("rolecall is an initContainers entry");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");

    // Probes on the port of [http] listen.
    let port = listen_port(&config);
    let named: BTreeMap<&str, u64> = sidecar["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?, p["containerPort"].as_u64()?)))
        .collect();
    for (probe, path) in [
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/livez"),
        ("startupProbe", "/livez"),
    ] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        let probed = match &get["port"] {
            Value::String(name) => named.get(name.as_str()).copied(),
            other => other.as_u64(),
        };
        assert_eq!(probed, Some(port), "{probe} asks the port of [http] listen");
    }

    // The configuration file: `--config PATH`, PATH in a mount of the ConfigMap.
    let args: Vec<&str> = sidecar["command"]
        .as_array()
        .into_iter()
        .chain(sidecar["args"].as_array())
        .flatten()
        .filter_map(|a| a.as_str())
        .collect();
    let at = args
        .iter()
        .position(|a| *a == "--config")
        .expect("--config");
    let config_path = Path::new(args[at + 1]);
    assert!(args.contains(&"run"), "{args:?}");
    let volumes: BTreeMap<&str, &Value> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?, v)))
        .collect();
    let volume_at = |dir: &Path| -> &Value {
        let mount = sidecar["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"].as_str().map(Path::new) == Some(dir))
            .unwrap_or_else(|| panic!("nothing is mounted at {}", dir.display()));
        assert_eq!(mount["readOnly"], true, "{mount}");
        volumes[mount["name"].as_str().expect("a mount names its volume")]
    };
    let cm = volume_at(config_path.parent().unwrap());
    assert_eq!(cm["configMap"]["name"], configmap.as_str());
    assert_eq!(config_path.file_name().unwrap(), "rolecall.toml");

    // Each password file: an item of a Secret mounted in its folder, not readable by others,
    // and readable by rolecall's user through the pod's fsGroup.
    let files = secret_files(&config);
    assert!(!files.is_empty(), "the example names its password files");
    for file in &files {
        let file = Path::new(file);
        let secret = &volume_at(file.parent().unwrap())["secret"];
        let mode = secret["defaultMode"].as_u64().expect("defaultMode is set");
        assert_eq!(
            mode & 0o004,
            0,
            "{}: readable by every user",
            file.display()
        );
        let name = file.file_name().unwrap().to_str().unwrap();
        let item = secret["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["path"] == name);
        assert!(item.is_some(), "no Secret item is {name}");
        let user_mode = item.and_then(|i| i["mode"].as_u64()).unwrap_or(mode);
        assert_eq!(user_mode & 0o004, 0, "{name}: readable by every user");
        assert_ne!(
            user_mode & 0o040,
            0,
            "{name}: its group (fsGroup) cannot read it"
        );
    }
    // Every container's processes get the pod's fsGroup as a supplementary group.
    let user = &sidecar["securityContext"];
    assert!(
        pod["securityContext"]["fsGroup"].as_u64().is_some(),
        "the pod sets fsGroup, the group of the Secret's files"
    );

    // The hardening the README promises.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(
        user["runAsUser"].as_u64().is_some_and(|u| u > 0),
        "a fixed user"
    );
    assert_eq!(user["readOnlyRootFilesystem"], true);
    assert_eq!(user["allowPrivilegeEscalation"], false);
    assert_eq!(user["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert!(user["capabilities"]["add"].is_null(), "no capability added");
    assert!(
        sidecar["resources"]["limits"]["memory"].is_string(),
        "a memory limit"
    );
}
