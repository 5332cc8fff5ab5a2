//! Every MQTT topic EdgeFleet uses. Nothing else in the workspace formats topic strings.
//!
//! | topic | content |
//! |---|---|
//! | `{p}/a/{id}/s` | status (retained, also the last-will) |
//! | `{p}/a/{id}/b` | birth |
//! | `{p}/a/{id}/hb` | heartbeat |
//! | `{p}/a/{id}/inv` | inventory chunk or delta |
//! | `{p}/a/{id}/ev` | event |
//! | `{p}/a/{id}/res` | command result or progress |
//! | `{p}/a/{id}/cmd` | command (console → agent) |
//! | `{p}/e/{id}` | enrollment request |
//! | `{p}/e/{id}/r` | enrollment response |
//! | `{p}/c/state` | console state (retained) |

use crate::identity::AgentId;

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "ef";

/// A per-agent channel under `{p}/a/{id}/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Status,
    Birth,
    Heartbeat,
    Inventory,
    Event,
    Result,
    Command,
}

impl Channel {
    pub const ALL: [Channel; 7] = [
        Channel::Status,
        Channel::Birth,
        Channel::Heartbeat,
        Channel::Inventory,
        Channel::Event,
        Channel::Result,
        Channel::Command,
    ];

    fn suffix(self) -> &'static str {
        match self {
            Channel::Status => "s",
            Channel::Birth => "b",
            Channel::Heartbeat => "hb",
            Channel::Inventory => "inv",
            Channel::Event => "ev",
            Channel::Result => "res",
            Channel::Command => "cmd",
        }
    }
}

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    Agent { id: AgentId, channel: Channel },
    Enroll { id: AgentId },
    EnrollReply { id: AgentId },
    ConsoleState,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic prefix must be 1-16 characters of [a-z0-9_-], got {0:?}")]
    BadPrefix(String),
    #[error("not an EdgeFleet topic: {0:?}")]
    Unknown(String),
    #[error("bad agent id in topic {0:?}")]
    BadAgentId(String),
}

/// Builds and parses topics under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            prefix: DEFAULT_PREFIX.to_string(),
        }
    }
}

impl Topics {
    /// Topics are paid for on every publish, so the prefix is kept short and plain.
    pub fn new(prefix: &str) -> Result<Topics, TopicError> {
        let ok = (1..=16).contains(&prefix.len())
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Topics {
                prefix: prefix.to_string(),
            })
        } else {
            Err(TopicError::BadPrefix(prefix.chars().take(40).collect()))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn agent(&self, id: &AgentId, channel: Channel) -> String {
        format!("{}/a/{}/{}", self.prefix, id, channel.suffix())
    }

    pub fn enroll(&self, id: &AgentId) -> String {
        format!("{}/e/{}", self.prefix, id)
    }

    pub fn enroll_reply(&self, id: &AgentId) -> String {
        format!("{}/e/{}/r", self.prefix, id)
    }

    pub fn console_state(&self) -> String {
        format!("{}/c/state", self.prefix)
    }

    /// What the console subscribes to.
    pub fn console_filters(&self) -> Vec<String> {
        vec![
            format!("{}/a/+/+", self.prefix),
            format!("{}/e/+", self.prefix),
        ]
    }

    /// What an agent subscribes to.
    pub fn agent_filters(&self, id: &AgentId) -> Vec<String> {
        vec![
            self.agent(id, Channel::Command),
            self.enroll_reply(id),
            self.console_state(),
        ]
    }

    /// The filters of [`Topics::agent_filters`] that belong to one agent, with the id as
    /// `+`. The embedded broker keeps their logs small (`BrokerConfig::client_filters`).
    pub fn agent_own_filter_patterns(&self) -> Vec<String> {
        vec![
            format!("{}/a/+/{}", self.prefix, Channel::Command.suffix()),
            format!("{}/e/+/r", self.prefix),
        ]
    }

    pub fn parse(&self, topic: &str) -> Result<Topic, TopicError> {
        let unknown = || TopicError::Unknown(topic.chars().take(80).collect());
        let rest = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(unknown)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| {
            s.parse::<AgentId>()
                .map_err(|_| TopicError::BadAgentId(topic.chars().take(80).collect()))
        };
        match parts.as_slice() {
            ["c", "state"] => Ok(Topic::ConsoleState),
            ["e", agent] => Ok(Topic::Enroll { id: id(agent)? }),
            ["e", agent, "r"] => Ok(Topic::EnrollReply { id: id(agent)? }),
            ["a", agent, suffix] => {
                let channel = Channel::ALL
                    .into_iter()
                    .find(|c| c.suffix() == *suffix)
                    .ok_or_else(unknown)?;
                Ok(Topic::Agent {
                    id: id(agent)?,
                    channel,
                })
            }
            _ => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn every_topic_round_trips_through_parse() {
        let t = Topics::default();
        let id = Identity::from_seed(&[1; 32]).agent_id();
        for channel in Channel::ALL {
            let topic = t.agent(&id, channel);
            assert_eq!(
                t.parse(&topic),
                Ok(Topic::Agent {
                    id: id.clone(),
                    channel
                })
            );
        }
        assert_eq!(
            t.parse(&t.enroll(&id)),
            Ok(Topic::Enroll { id: id.clone() })
        );
        assert_eq!(
            t.parse(&t.enroll_reply(&id)),
            Ok(Topic::EnrollReply { id: id.clone() })
        );
        assert_eq!(t.parse(&t.console_state()), Ok(Topic::ConsoleState));
        assert_eq!(t.agent(&id, Channel::Heartbeat), format!("ef/a/{id}/hb"));
    }

    #[test]
    fn own_filter_patterns_are_the_agent_filters_with_the_id_as_a_wildcard() {
        let t = Topics::new("site7").unwrap();
        let id = Identity::from_seed(&[2; 32]).agent_id();
        let patterns = t.agent_own_filter_patterns();
        let own: Vec<String> = patterns
            .iter()
            .map(|p| p.replace('+', id.as_str()))
            .collect();
        let filters = t.agent_filters(&id);
        assert_eq!(own.len(), filters.len() - 1, "{patterns:?}");
        for f in &own {
            assert!(
                filters.contains(f),
                "{f} is not an agent filter: {filters:?}"
            );
        }
        // Only the console state is shared.
        assert!(!own.contains(&t.console_state()));
    }

    #[test]
    fn foreign_and_malformed_topics_are_typed_errors() {
        let t = Topics::default();
        for bad in [
            "",
            "ef",
            "ef/",
            "xx/c/state",
            "ef/a",
            "ef/a/x/hb",
            "ef/a/abcdefghijklmnop/zz",
            "ef/a/abcdefghijklmnop/hb/x",
            "ef/c/state/x",
            "ef/a/ABCDEFGHIJKLMNOP/hb",
        ] {
            assert!(t.parse(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            t.parse("ef/a/abcdefgh1jklmnop/hb"),
            Err(TopicError::BadAgentId(_))
        ));
    }

    #[test]
    fn prefixes_with_wildcards_or_slashes_are_refused() {
        for bad in ["", "a/b", "a+", "#", "$sys", "UPPER", "waytoolongprefix17"] {
            assert!(Topics::new(bad).is_err(), "{bad:?}");
        }
        assert!(Topics::new("fleet-2").is_ok());
    }
}
