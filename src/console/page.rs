//! The page at `/`: the node's verdict and reason at a glance, each group's sentinels, master,
//! servers and the node's connections coloured by role, the recent changes, and links to
//! `/status`, `/readyz?verbose` and `/metrics`.
//!
//! Rendered by the server from the `/status` document it would send, and refreshed by the
//! browser every [`REFRESH_SECONDS`] with `<meta http-equiv="refresh">`: no script, no external
//! asset, so the page works without JavaScript, in a text browser and behind a strict
//! `Content-Security-Policy` (the server sends one that allows no script at all), and what it
//! shows is exactly what `rolecall status` prints from the same document. Every string from
//! the document goes through [`escape`]: server names, reasons and event payloads come from
//! outside.

use std::fmt::Write as _;

use super::view::{Group, Status, age, ago};

/// How often the page reloads itself.
pub const REFRESH_SECONDS: u32 = 2;

const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#f4f4f6}\
main{max-width:70em;margin:0 auto;padding:1em}\
header{padding:1em 1.5em;border-radius:8px;color:#fff}\
header h1{margin:0;font-size:2.2em}header p{margin:.3em 0}\
.in{background:#1f7a3a}.out{background:#b3261e}.maint{background:#6b5b00}\
section{background:#fff;border-radius:8px;margin:1em 0;padding:.5em 1.5em 1em}\
table{border-collapse:collapse}td,th{text-align:left;padding:.15em .8em .15em 0;vertical-align:top}\
.role-master{color:#1f7a3a;font-weight:600}.role-replica{color:#5b3cc4;font-weight:600}\
.role-unknown{color:#777}.bad{background:#fde8e6}.good{background:#e6f4ea}\
td.when{white-space:nowrap}.caption{color:#555;margin-top:-.6em}footer{color:#555;font-size:.9em}";

/// The page for `s`, rendered at `now_unix_ms` (wall clock).
pub fn render(s: &Status, now_unix_ms: u64) -> String {
    let mut out = String::with_capacity(8192);
    let word = if s.serving() { "IN" } else { "OUT" };
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{word} {} \u{2014} {} \u{2014} rolecall</title><style>{STYLE}</style></head>\
         <body><main>",
        escape(&s.verdict),
        escape(&s.node.name)
    );
    header(&mut out, s, now_unix_ms);
    for g in &s.groups {
        group(&mut out, g);
    }
    changes(&mut out, s);
    let _ = writeln!(
        out,
        "<footer><p><a href=\"/status\">/status</a> (JSON) \u{b7} \
         <a href=\"/readyz?verbose\">/readyz?verbose</a> \u{b7} <a href=\"/metrics\">/metrics</a>\
         </p><p>This page reloads every {REFRESH_SECONDS} s.</p></footer></main></body></html>"
    );
    out
}

/// The verdict at a glance: IN or OUT, the verdict word, the reason, since when.
fn header(out: &mut String, s: &Status, now: u64) {
    let (class, word) = match (s.serving(), s.maintenance.on) {
        (true, _) => ("in", "IN"),
        (false, true) => ("maint", "OUT (maintenance)"),
        (false, false) => ("out", "OUT"),
    };
    let since = match s.since() {
        Some(c) => format!("since {} ({} ago)", c.at, ago(c.at_unix_ms, now)),
        None if !s.checked => "no complete check yet".to_string(),
        None => "since before the changes kept".to_string(),
    };
    let snapshot = match s.age_ms {
        Some(a) if s.stale => format!("snapshot {} old: STALE", age(a)),
        Some(a) => format!("snapshot {} old", age(a)),
        None => "no snapshot yet".to_string(),
    };
    let _ = write!(
        out,
        "<header id=\"node\" class=\"{class}\"><h1><span id=\"rotation\">{word}</span> \
         <span id=\"verdict\">{}</span></h1><p id=\"reason\">{}</p>\
         <p>node <b id=\"node-name\">{}</b> \u{b7} {} \u{b7} {} \u{b7} <span id=\"maintenance\">{}</span></p>\
         </header>",
        escape(&s.verdict),
        escape(&s.reason),
        escape(&s.node.name),
        escape(&since),
        escape(&snapshot),
        escape(&super::text::maintenance(s, now)),
    );
}

/// The CSS class of a role word.
fn role_class(role: Option<&str>) -> &'static str {
    match role {
        Some("master") => "role-master",
        Some("replica") | Some("slave") => "role-replica",
        _ => "role-unknown",
    }
}

fn group(out: &mut String, g: &Group) {
    let class = if g.in_rotation { "good" } else { "bad" };
    let _ = write!(
        out,
        "<section class=\"group\"><h2>group {} <span class=\"{class}\">{}</span></h2><p>{}</p>",
        escape(&g.name),
        escape(&g.verdict),
        escape(&g.reason)
    );
    sentinels(out, g);
    servers(out, g);
    connections(out, g);
    let event = match &g.last_event {
        Some(e) => format!(
            "{} from {}{}: {}",
            e.channel,
            e.sentinel,
            e.age_ms
                .map(|a| format!(", {} ago", age(a)))
                .unwrap_or_default(),
            e.payload
        ),
        None => "none heard".to_string(),
    };
    let _ = write!(
        out,
        "<p>write probe on the master: <b>{}</b><br>last Sentinel event: {}</p></section>",
        escape(&g.probe_text()),
        escape(&event)
    );
}

fn sentinels(out: &mut String, g: &Group) {
    let _ = write!(
        out,
        "<h3>Sentinels: {} of {} agree{}</h3><table><tr><th>sentinel</th><th>names as master</th><th></th></tr>",
        g.votes,
        g.sentinels_known,
        if g.majority { "" } else { " (no majority)" }
    );
    for s in &g.sentinels {
        let mut notes = Vec::new();
        if s.tilt {
            notes.push("TILT: its vote is ignored".to_string());
        }
        if !s.counted {
            notes.push("the same sentinel as another address".to_string());
        }
        notes.extend(s.error.clone());
        let agrees = s.master.is_some() && s.master == g.master;
        let _ = write!(
            out,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td></tr>",
            if agrees { "good" } else { "bad" },
            escape(&s.addr),
            escape(s.master.as_deref().unwrap_or("-")),
            escape(&notes.join("; "))
        );
    }
    out.push_str("</table>");
}

/// Sentinel's master first, then every other server rolecall asked, by role, then the replicas
/// the sentinels list that rolecall did not ask.
fn servers(out: &mut String, g: &Group) {
    out.push_str(
        "<h3>Servers</h3><p class=\"caption\">Sentinel's master and every server the node's \
         connections reach, with the role each answered; then the replicas the sentinels list\
         </p><table><tr><th>server</th><th>role</th><th></th></tr>",
    );
    let mut rows: Vec<(&str, Option<&str>, Option<&str>)> = Vec::new();
    if let Some(m) = &g.master {
        rows.push((m, g.role_of(m), Some("Sentinel's master")));
    }
    for s in g
        .servers
        .iter()
        .filter(|s| Some(&s.addr) != g.master.as_ref())
    {
        rows.push((&s.addr, s.role.as_deref(), s.error.as_deref()));
    }
    for addr in g
        .other_servers
        .iter()
        .filter(|a| Some(*a) != g.master.as_ref() && !g.servers.iter().any(|s| &s.addr == *a))
    {
        let role = g.role_of(addr).or(Some("replica"));
        rows.push((addr, role, Some("as the sentinels list it")));
    }
    for (addr, role, note) in rows {
        let _ = write!(
            out,
            "<tr><td class=\"{}\">{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            role_class(role),
            escape(addr),
            role_class(role),
            escape(role.unwrap_or("?")),
            escape(note.unwrap_or(""))
        );
    }
    out.push_str("</table>");
}

/// The node's connections, each coloured by its server's role; one not on Sentinel's master
/// is marked.
fn connections(out: &mut String, g: &Group) {
    if g.connections.is_empty() {
        out.push_str("<h3>The node's connections</h3><p class=\"bad\">none to this group</p>");
        return;
    }
    out.push_str(
        "<h3>The node's connections</h3><table><tr><th>from</th><th>to</th><th>server</th><th>role</th></tr>",
    );
    for c in &g.connections {
        let on_master = Some(&c.server) == g.master.as_ref();
        let _ = write!(
            out,
            "<tr class=\"connection {}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            if on_master { "good" } else { "bad" },
            escape(&c.local),
            escape(&c.remote),
            escape(&c.server),
            role_class(c.role.as_deref()),
            escape(c.role.as_deref().unwrap_or("?"))
        );
    }
    out.push_str("</table>");
}

fn changes(out: &mut String, s: &Status) {
    out.push_str("<section id=\"changes\"><h2>Recent changes</h2>");
    if s.changes.is_empty() {
        out.push_str("<p>none yet</p></section>");
        return;
    }
    out.push_str("<table><tr><th>when</th><th></th><th>verdict</th><th>why</th></tr>");
    for c in s.changes.iter().rev() {
        let _ = write!(
            out,
            "<tr class=\"{}\"><td class=\"when\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if c.in_rotation { "good" } else { "bad" },
            escape(&c.at),
            if c.in_rotation { "IN" } else { "OUT" },
            escape(&c.verdict),
            escape(&c.reason)
        );
    }
    out.push_str("</table><p>newest first</p></section>");
}

/// `s` as HTML text or a quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::testdata;

    #[test]
    fn the_page_shows_the_verdict_groups_and_changes_and_escapes_what_came_from_outside() {
        let mut s = testdata::stuck();
        s.groups[0].servers[0].addr = "<img src=x onerror=alert(1)>:6379".into();
        s.node.name = "a&b\"<".into();
        let page = render(&s, testdata::NOW_MS);
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"2\">"));
        assert!(page.contains(
            "<span id=\"rotation\">OUT</span> <span id=\"verdict\">stuck_on_replica</span>"
        ));
        assert!(
            page.contains("<b id=\"node-name\">a&amp;b&quot;&lt;</b>"),
            "{page}"
        );
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;:6379"));
        assert!(
            !page.contains("<img"),
            "nothing from outside becomes markup"
        );
        assert!(!page.contains('\u{1b}'));
        assert!(page.contains("Sentinels: 3 of 3 agree"));
        assert!(page.contains(
            "<tr class=\"connection bad\"><td>127.0.0.1:50001</td><td>127.0.0.1:6379</td>\
             <td>127.0.0.1:6379</td><td class=\"role-replica\">replica</td></tr>"
        ));
        assert!(page.contains("<td class=\"role-master\">127.0.0.1:6380</td>"));
        // A replica the sentinels list that rolecall did not ask, once.
        assert!(page.contains(
            "<tr><td class=\"role-replica\">127.0.0.1:6381</td><td class=\"role-replica\">\
             replica</td><td>as the sentinels list it</td></tr>"
        ));
        assert_eq!(page.matches("127.0.0.1:6381").count(), 1, "{page}");
        assert!(page.contains("since 2026-11-30T14:30:12.345Z (47s ago)"));
        for link in ["/status", "/readyz?verbose", "/metrics"] {
            assert!(page.contains(&format!("<a href=\"{link}\">")), "{link}");
        }
        let newest = page.find(">2026-11-30T14:30:12.345Z</td>").unwrap();
        let oldest = page.find(">2026-11-30T14:29:50.101Z</td>").unwrap();
        assert!(newest < oldest, "newest first");
        assert!(!page.contains("<script"), "no script");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external asset"
        );
    }

    #[test]
    fn escape_covers_text_and_attributes() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(escape("a\u{1b}b"), "a\u{fffd}b");
    }
}
