//! `/status` documents for the renderers' tests, as the daemon sends them.

use super::view::Status;

/// The wall clock of the tests: 2026-11-30T14:30:59.345Z.
pub const NOW_MS: u64 = 1_796_049_059_345;

/// A node pinned to the old master after a failover, with a hostile byte in a reason.
pub fn stuck() -> Status {
    let why = "group mymaster: a node connection is on 127.0.0.1:6379, a replica\u{1b}[31m \
               (Sentinel's master is 127.0.0.1:6380)";
    let json = serde_json::json!({
        "verdict": "stuck_on_replica",
        "in_rotation": false,
        "reason": why,
        "observed": "stuck_on_replica",
        "checked": true,
        "checks": 120,
        "stale": false,
        "age_ms": 80,
        "node": {"name": "pinned", "selector": "pid 4242", "pids": [4242], "running": true},
        "groups": [{
            "name": "mymaster",
            "master_name": "mymaster",
            "verdict": "stuck_on_replica",
            "in_rotation": false,
            "reason": why,
            "master": "127.0.0.1:6380",
            "votes": 3,
            "configured_sentinels": 3,
            "sentinels_known": 3,
            "sentinels_asked": 3,
            "majority": true,
            "dissent": [],
            "sentinels": [
                {"addr": "127.0.0.1:26379", "found": "configured", "counted": true,
                 "master": "127.0.0.1:6380", "tilt": false, "error": null, "latency_ms": 0.3},
                {"addr": "127.0.0.1:26380", "found": "configured", "counted": true,
                 "master": "127.0.0.1:6380", "tilt": false, "error": null, "latency_ms": 0.3},
                {"addr": "127.0.0.1:26381", "found": "configured", "counted": true,
                 "master": "127.0.0.1:6380", "tilt": false, "error": null, "latency_ms": 0.4}
            ],
            "connections": [
                {"local": "127.0.0.1:50001", "remote": "127.0.0.1:6379",
                 "server": "127.0.0.1:6379", "placed_by": "address", "role": "replica"},
                {"local": "127.0.0.1:50002", "remote": "127.0.0.1:6379",
                 "server": "127.0.0.1:6379", "placed_by": "address", "role": "replica"}
            ],
            "unplaced": [],
            "servers": [
                {"addr": "127.0.0.1:6379", "role": "replica", "error": null, "latency_ms": 0.2},
                {"addr": "127.0.0.1:6380", "role": "master", "error": null, "latency_ms": 0.2}
            ],
            "other_servers": ["127.0.0.1:6379", "127.0.0.1:6381"],
            "probe": {"ok": true, "error": null},
            "repair": null,
            "fenced": [],
            "last_event": {"sentinel": "127.0.0.1:26379", "channel": "+switch-master",
                           "payload": "mymaster 127.0.0.1 6379 127.0.0.1 6380", "age_ms": 12_000}
        }],
        "maintenance": {"on": false, "by_file": false, "by_api": false, "file": null,
                        "since_unix_ms": null},
        "changes": [
            {"at": "2026-11-30T14:29:50.101Z", "at_unix_ms": 1_796_048_990_101u64,
             "verdict": "ok", "in_rotation": true,
             "reason": "every node connection is on Sentinel's master"},
            {"at": "2026-11-30T14:30:12.345Z", "at_unix_ms": 1_796_049_012_345u64,
             "verdict": "stuck_on_replica", "in_rotation": false, "reason": why}
        ]
    });
    Status::from_json(json).expect("a /status document")
}
