//! The `/status` document as a person's views read it: the fields the page and `rolecall
//! status` show, each defaulted, so a daemon that sends fewer (an older one) still renders.
//! Parsed from the JSON, the same for the page (which the server renders from the JSON it would
//! send) and for the command line (which fetched it): both show the same thing.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    pub verdict: String,
    pub in_rotation: bool,
    pub reason: String,
    pub checked: bool,
    pub stale: bool,
    /// Age of the snapshot, at the time `/status` answered.
    pub age_ms: Option<u64>,
    pub node: Node,
    pub groups: Vec<Group>,
    pub maintenance: Maintenance,
    /// The last verdict changes, oldest first.
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Node {
    pub name: String,
    pub running: bool,
    pub pids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Maintenance {
    pub on: bool,
    pub by_file: bool,
    pub by_api: bool,
    pub file: Option<String>,
    pub since_unix_ms: Option<u64>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Change {
    pub at: String,
    pub at_unix_ms: u64,
    pub verdict: String,
    pub in_rotation: bool,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Group {
    pub name: String,
    pub master_name: String,
    pub verdict: String,
    pub in_rotation: bool,
    pub reason: String,
    pub master: Option<String>,
    pub votes: usize,
    pub sentinels_known: usize,
    pub majority: bool,
    pub dissent: Vec<String>,
    pub sentinels: Vec<Sentinel>,
    pub connections: Vec<Connection>,
    pub servers: Vec<Server>,
    /// The replicas the sentinels list (and a master only a minority names).
    pub other_servers: Vec<String>,
    pub probe: Option<Probe>,
    pub last_event: Option<Event>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Sentinel {
    pub addr: String,
    pub counted: bool,
    pub master: Option<String>,
    pub tilt: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Connection {
    pub local: String,
    pub remote: String,
    pub server: String,
    pub role: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Server {
    pub addr: String,
    pub role: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Probe {
    pub ok: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Event {
    pub sentinel: String,
    pub channel: String,
    pub payload: String,
    pub age_ms: Option<u64>,
}

impl Status {
    /// The view of a `/status` document; `Err` names what is wrong with it.
    pub fn from_json(json: serde_json::Value) -> Result<Status, String> {
        serde_json::from_value(json).map_err(|e| format!("not a rolecall /status document: {e}"))
    }

    /// Whether load balancers send traffic to the node: in rotation and not in maintenance, as
    /// `/readyz` says.
    pub fn serving(&self) -> bool {
        self.in_rotation && !self.maintenance.on
    }

    /// The change that started the current verdict and rotation, if the history holds it.
    pub fn since(&self) -> Option<&Change> {
        self.changes
            .last()
            .filter(|c| c.verdict == self.verdict && c.in_rotation == self.in_rotation)
    }

    /// `rolecall check`'s exit code for this verdict: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN
    /// (a verdict this build does not know is UNKNOWN).
    pub fn nagios_code(&self) -> u8 {
        crate::verdict::Verdict::from_name(&self.verdict).map_or(3, |v| v.nagios_code())
    }
}

impl Group {
    /// The role rolecall last saw for `addr`: from the server's `ROLE`, else a connection's.
    pub fn role_of(&self, addr: &str) -> Option<&str> {
        self.servers
            .iter()
            .find(|s| s.addr == addr)
            .and_then(|s| s.role.as_deref())
            .or_else(|| {
                self.connections
                    .iter()
                    .find(|c| c.server == addr)
                    .and_then(|c| c.role.as_deref())
            })
    }

    /// The node's connections by server, in the order first seen: `(server, role, count)`.
    pub fn connections_by_server(&self) -> Vec<(&str, Option<&str>, usize)> {
        let mut out: Vec<(&str, Option<&str>, usize)> = Vec::new();
        for c in &self.connections {
            match out.iter_mut().find(|(s, _, _)| *s == c.server) {
                Some(entry) => entry.2 += 1,
                None => out.push((&c.server, c.role.as_deref(), 1)),
            }
        }
        out
    }

    /// The probe in a word or two: `ok`, the error, or `-` when there was none.
    pub fn probe_text(&self) -> String {
        match &self.probe {
            Some(p) if p.ok => "ok".to_string(),
            Some(p) => p.error.clone().unwrap_or_else(|| "failed".to_string()),
            None => "-".to_string(),
        }
    }
}

/// A duration in milliseconds as a person reads it: `850ms`, `12s`, `3m12s`, `2h05m`, `3d04h`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// How long ago `unix_ms` was at `now_unix_ms` (a time in the future, as a clock step can make
/// it, is `0ms`).
pub fn ago(unix_ms: u64, now_unix_ms: u64) -> String {
    age(now_unix_ms.saturating_sub(unix_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_a_person_says_them() {
        assert_eq!(age(850), "850ms");
        assert_eq!(age(12_400), "12s");
        assert_eq!(age(192_000), "3m12s");
        assert_eq!(age(7_500_000), "2h05m");
        assert_eq!(age(273_600_000), "3d04h");
        assert_eq!(ago(2_000, 1_000), "0ms");
    }

    #[test]
    fn a_sparse_or_foreign_document_still_reads() {
        let s = Status::from_json(serde_json::json!({"verdict": "ok"})).unwrap();
        assert_eq!(s.nagios_code(), 0);
        assert!(s.since().is_none());
        let s = Status::from_json(serde_json::json!({"verdict": "new_thing"})).unwrap();
        assert_eq!(s.nagios_code(), 3);
        assert!(Status::from_json(serde_json::json!([1, 2])).is_err());
    }
}
