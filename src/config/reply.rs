//! [`OutWord`]: the words rolecall's agent may answer for a node out of rotation, and what each
//! one does in HAProxy. The one place that knows them: the configuration parses and validates
//! them (`[agent] out_reply`, `reply.<verdict>`), the agent writes them, and the push to the
//! runtime API asks them which state they set.
//!
//! What they mean (HAProxy configuration.txt, "agent-check"): `drain` and `maint` set an
//! administrative state, which HAProxy keeps until someone says `ready` (the agent, or an
//! operator); `down`, `fail` and `stopped` set the operational state DOWN. The runtime API sets
//! the same flags (management.txt, "set server"): `set server B/S state drain|maint` for the
//! administrative words, `set server B/S agent down` for the operational ones. `up` and
//! `ready`, rolecall's words for a node in rotation, are not configurable and not here.

use std::fmt;

use super::ConfigError;

/// A word HAProxy's agent check accepts for a node out of rotation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutWord {
    /// Administrative (DRAIN): only persistent connections still reach the server.
    Drain,
    /// Operational: the server goes DOWN.
    Down,
    /// Administrative (MAINT): the server takes no new traffic.
    Maint,
    /// Operational: the server goes DOWN.
    Fail,
    /// Operational: the server goes DOWN.
    Stopped,
}

impl OutWord {
    /// Every word, in the order messages list them.
    pub const ALL: [OutWord; 5] = [
        OutWord::Drain,
        OutWord::Down,
        OutWord::Maint,
        OutWord::Fail,
        OutWord::Stopped,
    ];

    /// The word as HAProxy reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            OutWord::Drain => "drain",
            OutWord::Down => "down",
            OutWord::Maint => "maint",
            OutWord::Fail => "fail",
            OutWord::Stopped => "stopped",
        }
    }

    /// The word spelt exactly as [`OutWord::as_str`] writes it.
    pub fn parse(s: &str) -> Option<OutWord> {
        OutWord::ALL.into_iter().find(|w| w.as_str() == s)
    }

    /// Whether the word sets an administrative state (`drain`, `maint`): sticky until a
    /// `ready`, which lifts it whoever set it; the runtime API's `set server B/S state <word>`.
    /// The other words are operational: the server goes DOWN, the runtime API's `set server
    /// B/S agent down`, and the administrative state is left alone.
    pub fn is_admin(self) -> bool {
        matches!(self, OutWord::Drain | OutWord::Maint)
    }
}

impl fmt::Display for OutWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The word, quoted, as logs show it (a stance logs as `Out("drain")`).
impl fmt::Debug for OutWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// The word the key `what` sets, or an error that lists the words HAProxy accepts.
pub(super) fn out_word(what: &str, word: &str) -> Result<OutWord, ConfigError> {
    OutWord::parse(word).ok_or_else(|| {
        ConfigError::invalid(format!(
            "{what}: {word:?} is not an agent word HAProxy accepts for a node out of rotation (one of {})",
            OutWord::ALL.map(OutWord::as_str).join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_word_reads_back_as_it_is_written() {
        for w in OutWord::ALL {
            assert_eq!(OutWord::parse(w.as_str()), Some(w));
            assert_eq!(w.to_string(), w.as_str());
            assert_eq!(format!("{w:?}"), format!("{:?}", w.as_str()));
        }
        for other in ["up", "ready", "Drain", " drain", "failed", ""] {
            assert_eq!(OutWord::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn drain_and_maint_are_the_administrative_words() {
        let admin: Vec<_> = OutWord::ALL.into_iter().filter(|w| w.is_admin()).collect();
        assert_eq!(admin, [OutWord::Drain, OutWord::Maint]);
    }

    #[test]
    fn a_wrong_word_is_refused_with_the_words_haproxy_accepts() {
        assert_eq!(out_word("agent.out_reply", "down").unwrap(), OutWord::Down);
        let err = out_word("agent.reply.node_missing", "failed")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "agent.reply.node_missing: \"failed\" is not an agent word HAProxy accepts for a node out of rotation (one of drain, down, maint, fail, stopped)"
        );
    }
}
