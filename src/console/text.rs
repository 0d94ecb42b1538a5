//! `rolecall status` on a terminal: one line for the node, one row per group, then the recent
//! verdict changes. Every string from the daemon is cleaned of control characters first: server
//! names and reasons come from outside, and an escape sequence must not reach the terminal.

use super::view::{Group, Status, age, ago};

/// The text of one `rolecall status` look at `now_unix_ms` (wall clock).
pub fn render(s: &Status, now_unix_ms: u64) -> String {
    let mut out = node_line(s, now_unix_ms);
    out.push('\n');
    if s.groups.is_empty() {
        out.push_str("no group checked yet\n");
    } else {
        let mut rows = vec![
            [
                "GROUP",
                "VERDICT",
                "MASTER",
                "SENTINELS",
                "CONNECTIONS",
                "PROBE",
                "LAST EVENT",
            ]
            .map(String::from)
            .to_vec(),
        ];
        rows.extend(s.groups.iter().map(group_row));
        out.push_str(&table(&rows));
    }
    out.push_str(&changes(s));
    out
}

/// `node NAME: IN ok since … (… ago); snapshot 80ms old; maintenance off; why: …`
fn node_line(s: &Status, now: u64) -> String {
    let rotation = match (s.serving(), s.maintenance.on) {
        (true, _) => "IN",
        (false, true) => "OUT (maintenance)",
        (false, false) => "OUT",
    };
    let since = match s.since() {
        Some(c) => format!("since {} ({} ago)", c.at, ago(c.at_unix_ms, now)),
        None if !s.checked => "(no complete check yet)".to_string(),
        None => "since before the changes kept".to_string(),
    };
    let snapshot = match s.age_ms {
        Some(a) if s.stale => format!("snapshot {} old, STALE", age(a)),
        Some(a) => format!("snapshot {} old", age(a)),
        None => "no snapshot yet".to_string(),
    };
    format!(
        "node {}: {rotation} {} {since}; {snapshot}; {}; why: {}\n",
        clean(&s.node.name),
        clean(&s.verdict),
        maintenance(s, now),
        clean(&s.reason)
    )
}

/// `maintenance off`, or `maintenance on since … (… ago) by flag file …: note`.
pub fn maintenance(s: &Status, now: u64) -> String {
    let m = &s.maintenance;
    if !m.on {
        return "maintenance off".to_string();
    }
    let since = m
        .since_unix_ms
        .map(|t| {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(t);
            format!(
                " since {} ({} ago)",
                humantime::format_rfc3339_seconds(at),
                ago(t, now)
            )
        })
        .unwrap_or_default();
    let by = match (m.by_file, m.by_api) {
        (true, true) => format!(
            "flag file {} and POST /maintenance",
            m.file.as_deref().unwrap_or("?")
        ),
        (true, false) => format!("flag file {}", m.file.as_deref().unwrap_or("?")),
        _ => "POST /maintenance".to_string(),
    };
    let note = m
        .note
        .as_deref()
        .map(|n| format!(": {n}"))
        .unwrap_or_default();
    clean(&format!("maintenance on{since} by {by}{note}"))
}

fn group_row(g: &Group) -> Vec<String> {
    let mut sentinels = format!("{}/{} agree", g.votes, g.sentinels_known);
    if !g.majority {
        sentinels.push_str(", no majority");
    }
    let connections: Vec<String> = g
        .connections_by_server()
        .into_iter()
        .map(|(server, role, n)| {
            let times = if n > 1 {
                format!(" x{n}")
            } else {
                String::new()
            };
            format!("{server} {}{times}", role.unwrap_or("?"))
        })
        .collect();
    let event = g
        .last_event
        .as_ref()
        .map(|e| match e.age_ms {
            Some(a) => format!("{} {} ago", e.channel, age(a)),
            None => e.channel.clone(),
        })
        .unwrap_or_else(|| "-".to_string());
    [
        g.name.clone(),
        g.verdict.clone(),
        g.master.clone().unwrap_or_else(|| "none".to_string()),
        sentinels,
        if connections.is_empty() {
            "none".to_string()
        } else {
            connections.join(", ")
        },
        g.probe_text(),
        event,
    ]
    .iter()
    .map(|c| clean(c))
    .collect()
}

fn changes(s: &Status) -> String {
    if s.changes.is_empty() {
        return "\nno verdict change yet\n".to_string();
    }
    let mut rows = Vec::with_capacity(s.changes.len());
    for c in &s.changes {
        rows.push(vec![
            format!("  {}", clean(&c.at)),
            if c.in_rotation { "IN" } else { "OUT" }.to_string(),
            clean(&c.verdict),
            clean(&c.reason),
        ]);
    }
    format!("\nrecent changes (oldest first):\n{}", table(&rows))
}

/// Columns padded to their widest cell, two spaces apart; the last one is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `s` with every control character (escape sequences, new lines) shown as `?`.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::testdata;

    #[test]
    fn a_stuck_node_reads_as_one_line_a_row_per_group_and_its_changes() {
        let s = testdata::stuck();
        let text = render(&s, testdata::NOW_MS);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "node pinned: OUT stuck_on_replica since 2026-11-30T14:30:12.345Z (47s ago); \
             snapshot 80ms old; maintenance off; why: group mymaster: a node connection \
             is on 127.0.0.1:6379, a replica?[31m (Sentinel's master is 127.0.0.1:6380)"
        );
        assert_eq!(
            lines[2],
            "GROUP     VERDICT           MASTER          SENTINELS  CONNECTIONS                PROBE  LAST EVENT"
        );
        assert_eq!(
            lines[3],
            "mymaster  stuck_on_replica  127.0.0.1:6380  3/3 agree  127.0.0.1:6379 replica x2  ok     +switch-master 12s ago"
        );
        assert_eq!(lines[5], "recent changes (oldest first):");
        assert!(
            lines[6].starts_with("  2026-11-30T14:29:50.101Z  IN   ok  "),
            "{text}"
        );
        assert!(
            lines[7].starts_with("  2026-11-30T14:30:12.345Z  OUT  stuck_on_replica  group"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "no escape reaches the terminal");
    }

    #[test]
    fn maintenance_and_a_node_before_its_first_check_say_so() {
        let mut s = testdata::stuck();
        s.verdict = "ok".into();
        s.in_rotation = true;
        s.maintenance.on = true;
        s.maintenance.by_file = true;
        s.maintenance.file = Some("/run/rolecall/maintenance".into());
        s.maintenance.since_unix_ms = Some(testdata::NOW_MS - 5_000);
        s.maintenance.note = Some("disk swap".into());
        let line = render(&s, testdata::NOW_MS);
        assert!(
            line.starts_with("node pinned: OUT (maintenance) ok since before the changes kept;"),
            "{line}"
        );
        assert!(
            line.contains(
                "maintenance on since 2026-11-30T14:30:54Z (5s ago) by flag file /run/rolecall/maintenance: disk swap;"
            ),
            "{line}"
        );
        let starting = crate::console::view::Status {
            verdict: "unknown".into(),
            reason: "no complete check yet".into(),
            ..Default::default()
        };
        let text = render(&starting, testdata::NOW_MS);
        assert!(
            text.starts_with("node : OUT unknown (no complete check yet); no snapshot yet;"),
            "{text}"
        );
        assert!(text.contains("no group checked yet\n"), "{text}");
        assert!(text.ends_with("no verdict change yet\n"), "{text}");
    }
}
