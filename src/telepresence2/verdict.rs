//! What to do about a dead connector's session once its grace is over: a pure function of
//! what the agent recorded while the connector lived and what it sees now. The rule, from
//! the facts of Telepresence 2: the session cache is deleted only after a successful
//! `Depart`, so a cache file that still names the recorded session after the connector died
//! means the traffic-manager may still hold that session and its intercepts (for its TTL, 24 h
//! by default). Anything else is not this agent's to end.

/// What the agent sees when the grace is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leftover<'a> {
    /// The session id recorded while the connector lived.
    pub recorded: Option<&'a str>,
    /// The session id the cache file names now (`None`: no cache file).
    pub cache_now: Option<&'a str>,
    /// A connector for the same daemon id runs now (its `daemons/<id>.json` is fresh, or
    /// another connector process of the user runs): it resumed the session or made its own.
    pub connector_running: bool,
    /// The journal says `Depart` was done already (an agent that crashed after it).
    pub departed: bool,
    /// The connector's `daemons/<id>.json` was ever seen (2.16+ writes it on connect).
    pub daemon_info_seen: bool,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing is left to end.
    Ended(Ended),
    /// `Depart` this session, then remove its cache file.
    Depart(String),
    /// `Depart` was done: only its cache file may be left to remove.
    Finish(String),
    /// Death or the session cannot be proven: a person must look.
    Attention(Unproven),
}

/// Why nothing is left to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A connector for the same daemon id runs again.
    Resumed,
    /// The cache file is gone: Telepresence departed the session itself (`quit`).
    DepartedByTelepresence,
    /// The cache names another session: a later connector's.
    Replaced(String),
    /// The connector never held a session (2.16+ wrote no cache).
    NeverConnected,
}

/// Why the agent will not act on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unproven {
    /// A cache names a session the agent never saw this connector hold.
    NotRecorded(String),
    /// No session cache and no daemon file: a Telepresence 2 before 2.6.7, which keeps
    /// none, may have left a session the agent cannot name.
    NoCache,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Resumed => f.write_str(
                "a connector for the same daemon runs again: it resumed the session or made its own",
            ),
            Ended::DepartedByTelepresence => {
                f.write_str("Telepresence departed the session itself (its session cache is gone)")
            }
            Ended::Replaced(id) => write!(
                f,
                "the session cache now names session {id}, a later connector's: not touched"
            ),
            Ended::NeverConnected => f.write_str("the connector never held a session"),
        }
    }
}

impl std::fmt::Display for Unproven {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unproven::NotRecorded(id) => write!(
                f,
                "the session cache names session {id}, which the agent never saw this connector hold: it will not end a session it cannot prove was this connector's"
            ),
            Unproven::NoCache => f.write_str(
                "no session cache and no daemon file (Telepresence 2 before 2.6.7 keeps none): the traffic-manager may keep a session the agent cannot name",
            ),
        }
    }
}

/// The decision for a dead connector's session.
pub fn decide(l: Leftover<'_>) -> Verdict {
    if l.connector_running {
        return Verdict::Ended(Ended::Resumed);
    }
    let Some(recorded) = l.recorded else {
        return match l.cache_now {
            Some(id) => Verdict::Attention(Unproven::NotRecorded(id.to_string())),
            None if l.daemon_info_seen => Verdict::Ended(Ended::NeverConnected),
            None => Verdict::Attention(Unproven::NoCache),
        };
    };
    match l.cache_now {
        Some(now) if now != recorded => Verdict::Ended(Ended::Replaced(now.to_string())),
        _ if l.departed => Verdict::Finish(recorded.to_string()),
        None => Verdict::Ended(Ended::DepartedByTelepresence),
        Some(_) => Verdict::Depart(recorded.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_recorded_session_still_cached_with_no_connector_is_departed() {
        let base = Leftover {
            recorded: Some("s1"),
            cache_now: Some("s1"),
            connector_running: false,
            departed: false,
            daemon_info_seen: true,
        };
        let table: &[(Leftover<'_>, Verdict)] = &[
            (base, Verdict::Depart("s1".into())),
            // A connector runs again: never depart, whatever the cache says.
            (
                Leftover {
                    connector_running: true,
                    ..base
                },
                Verdict::Ended(Ended::Resumed),
            ),
            (
                Leftover {
                    connector_running: true,
                    departed: true,
                    ..base
                },
                Verdict::Ended(Ended::Resumed),
            ),
            // Telepresence ended it itself.
            (
                Leftover {
                    cache_now: None,
                    ..base
                },
                Verdict::Ended(Ended::DepartedByTelepresence),
            ),
            // Another session now: never the recorded one's to end, nor the new one's.
            (
                Leftover {
                    cache_now: Some("s2"),
                    ..base
                },
                Verdict::Ended(Ended::Replaced("s2".into())),
            ),
            (
                Leftover {
                    cache_now: Some("s2"),
                    departed: true,
                    ..base
                },
                Verdict::Ended(Ended::Replaced("s2".into())),
            ),
            // Departed before an agent crash: finish (the cache may or may not be gone).
            (
                Leftover {
                    departed: true,
                    ..base
                },
                Verdict::Finish("s1".into()),
            ),
            (
                Leftover {
                    departed: true,
                    cache_now: None,
                    ..base
                },
                Verdict::Finish("s1".into()),
            ),
            // Never recorded.
            (
                Leftover {
                    recorded: None,
                    ..base
                },
                Verdict::Attention(Unproven::NotRecorded("s1".into())),
            ),
            (
                Leftover {
                    recorded: None,
                    cache_now: None,
                    ..base
                },
                Verdict::Ended(Ended::NeverConnected),
            ),
            (
                Leftover {
                    recorded: None,
                    cache_now: None,
                    daemon_info_seen: false,
                    ..base
                },
                Verdict::Attention(Unproven::NoCache),
            ),
        ];
        for (leftover, want) in table {
            assert_eq!(&decide(*leftover), want, "{leftover:?}");
        }
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(
            Ended::Replaced("s2".into()).to_string(),
            "the session cache now names session s2, a later connector's: not touched"
        );
        assert!(Unproven::NoCache.to_string().contains("before 2.6.7"));
    }
}
