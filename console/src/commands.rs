//! Remote commands, console side: the command record and its states, kept in the sled
//! tree `commands` (id → record) with the index `agent_commands` (host id ++ issued at ++ id).
//!
//! queued → delivered (published to the agent's command topic while it was online) →
//! running (first progress report) → succeeded / failed / rolled_back / rejected; or
//! expired, if it is still queued or delivered without an answer at its expiry. A command
//! that is not finished is published again on every birth of its agent: the agent refuses an
//! id it has seen (it keeps recent ids in its sled), so redelivery never runs it twice.

use std::collections::HashMap;
use std::sync::Mutex;

use edgefleet_codec::api::{CommandStep, CommandView};
use edgefleet_codec::{CommandAction, CommandOutcome};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    Queued,
    Delivered,
    Running,
    Succeeded,
    Failed,
    RolledBack,
    Rejected,
    Expired,
}

impl CommandState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::Queued => "queued",
            CommandState::Delivered => "delivered",
            CommandState::Running => "running",
            CommandState::Succeeded => "succeeded",
            CommandState::Failed => "failed",
            CommandState::RolledBack => "rolled_back",
            CommandState::Rejected => "rejected",
            CommandState::Expired => "expired",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(
            self,
            CommandState::Queued | CommandState::Delivered | CommandState::Running
        )
    }
}

impl From<CommandOutcome> for CommandState {
    fn from(o: CommandOutcome) -> Self {
        match o {
            CommandOutcome::Succeeded => CommandState::Succeeded,
            CommandOutcome::Failed => CommandState::Failed,
            CommandOutcome::RolledBack => CommandState::RolledBack,
            CommandOutcome::Rejected => CommandState::Rejected,
        }
    }
}

/// Everything the console keeps about one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub id: [u8; 16],
    /// The host id.
    pub agent: String,
    pub action: CommandAction,
    pub actor: String,
    pub issued_at: u64,
    pub expires_at: u64,
    pub state: CommandState,
    pub delivered_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub progress: Vec<CommandStep>,
    pub message: Option<String>,
    /// The signed COSE_Sign1 bytes, published as they are on every (re)delivery.
    pub signed: Vec<u8>,
}

pub fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_hex_id(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

pub fn action_name(a: &CommandAction) -> &'static str {
    match a {
        CommandAction::RestartApp { .. } => "restart-app",
        CommandAction::PushConfig { .. } => "push-config",
        CommandAction::UpdateApp { .. } => "update-app",
        CommandAction::RequestHeartbeat => "request-heartbeat",
        CommandAction::RescanInventory => "rescan-inventory",
        CommandAction::RunScript { .. } => "run-script",
        CommandAction::SetHeartbeatInterval { .. } => "set-heartbeat-interval",
        CommandAction::RollbackApp { .. } => "rollback-app",
    }
}

impl CommandRecord {
    pub fn view(&self) -> CommandView {
        let app = match &self.action {
            CommandAction::RestartApp { app }
            | CommandAction::PushConfig { app, .. }
            | CommandAction::UpdateApp { app, .. }
            | CommandAction::RollbackApp { app } => Some(app.clone()),
            _ => None,
        };
        CommandView {
            id: hex(&self.id),
            agent: self.agent.clone(),
            action: action_name(&self.action).to_string(),
            app,
            state: self.state.as_str().to_string(),
            actor: self.actor.clone(),
            issued_at: self.issued_at,
            expires_at: self.expires_at,
            delivered_at: self.delivered_at,
            finished_at: self.finished_at,
            progress: self.progress.clone(),
            message: self.message.clone(),
        }
    }
}

#[derive(Debug)]
pub struct Commands {
    tree: sled::Tree,
    index: sled::Tree,
    /// Unfinished command ids by host id.
    open: Mutex<HashMap<String, Vec<[u8; 16]>>>,
}

fn decode(v: &[u8]) -> Result<CommandRecord, StoreError> {
    serde_json::from_slice(v).map_err(|source| StoreError::Corrupt {
        tree: "commands",
        source,
    })
}

fn index_key(agent: &str, issued_at: u64, id: &[u8; 16]) -> Vec<u8> {
    let mut k = agent.as_bytes().to_vec();
    k.extend_from_slice(&issued_at.to_be_bytes());
    k.extend_from_slice(id);
    k
}

impl Commands {
    pub fn open(tree: sled::Tree, index: sled::Tree) -> Result<Commands, StoreError> {
        let mut open: HashMap<String, Vec<[u8; 16]>> = HashMap::new();
        for item in tree.iter() {
            let r = decode(&item?.1)?;
            if !r.state.is_final() {
                open.entry(r.agent.clone()).or_default().push(r.id);
            }
        }
        Ok(Commands {
            tree,
            index,
            open: Mutex::new(open),
        })
    }

    /// Stores a record (flushed: an accepted command must survive a crash). A final state
    /// is never replaced by an unfinished one: a delivery or progress written from a copy
    /// read before the result arrived is dropped.
    pub fn put(&self, r: &CommandRecord) -> Result<(), StoreError> {
        // Held across the read and the write, so two puts of one command cannot interleave.
        let mut open = self.open.lock().expect("commands lock");
        if !r.state.is_final() {
            if let Some(stored) = self.get(&r.id)? {
                if stored.state.is_final() {
                    return Ok(());
                }
            }
        }
        self.tree
            .insert(r.id, serde_json::to_vec(r).expect("commands serialize"))?;
        self.index
            .insert(index_key(&r.agent, r.issued_at, &r.id), &[])?;
        self.tree.flush()?;
        let ids = open.entry(r.agent.clone()).or_default();
        ids.retain(|id| *id != r.id);
        if !r.state.is_final() {
            ids.push(r.id);
        }
        Ok(())
    }

    pub fn get(&self, id: &[u8; 16]) -> Result<Option<CommandRecord>, StoreError> {
        self.tree.get(id)?.map(|v| decode(&v)).transpose()
    }

    /// Unfinished commands of a host, oldest first.
    pub fn open_for(&self, agent: &str) -> Vec<[u8; 16]> {
        self.open
            .lock()
            .expect("commands lock")
            .get(agent)
            .cloned()
            .unwrap_or_default()
    }

    /// Every unfinished command id.
    pub fn all_open(&self) -> Vec<[u8; 16]> {
        self.open
            .lock()
            .expect("commands lock")
            .values()
            .flatten()
            .copied()
            .collect()
    }

    /// A host's commands, newest first, at most `limit`.
    pub fn for_agent(&self, agent: &str, limit: usize) -> Result<Vec<CommandRecord>, StoreError> {
        let mut out = Vec::new();
        for item in self.index.scan_prefix(agent.as_bytes()).rev().take(limit) {
            let (k, _) = item?;
            let Some(id) = k
                .get(k.len() - 16..)
                .and_then(|s| <[u8; 16]>::try_from(s).ok())
            else {
                continue;
            };
            if let Some(r) = self.get(&id)? {
                out.push(r);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u8, state: CommandState) -> CommandRecord {
        CommandRecord {
            id: [id; 16],
            agent: "host1".into(),
            action: CommandAction::RestartApp { app: "web".into() },
            actor: "ops".into(),
            issued_at: u64::from(id),
            expires_at: 100,
            state,
            delivered_at: None,
            finished_at: None,
            progress: vec![],
            message: None,
            signed: vec![1, 2],
        }
    }

    #[test]
    fn open_commands_are_tracked_and_survive_a_reopen() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let c = Commands::open(db.open_tree("c").unwrap(), db.open_tree("i").unwrap()).unwrap();
        c.put(&record(1, CommandState::Queued)).unwrap();
        c.put(&record(2, CommandState::Delivered)).unwrap();
        c.put(&record(1, CommandState::Succeeded)).unwrap();
        assert_eq!(c.open_for("host1"), [[2; 16]]);
        let listed: Vec<u8> = c
            .for_agent("host1", 10)
            .unwrap()
            .iter()
            .map(|r| r.id[0])
            .collect();
        assert_eq!(listed, [2, 1], "newest first");
        drop(c);
        let c = Commands::open(db.open_tree("c").unwrap(), db.open_tree("i").unwrap()).unwrap();
        assert_eq!(c.all_open(), [[2; 16]]);
        assert_eq!(c.get(&[1; 16]).unwrap().unwrap().view().state, "succeeded");
        assert_eq!(parse_hex_id(&hex(&[7; 16])), Some([7; 16]));
        assert_eq!(parse_hex_id("zz"), None);
    }

    #[test]
    fn a_late_delivery_or_progress_never_reopens_a_finished_command() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let c = Commands::open(db.open_tree("c").unwrap(), db.open_tree("i").unwrap()).unwrap();
        c.put(&record(1, CommandState::Delivered)).unwrap();
        c.put(&record(1, CommandState::Succeeded)).unwrap();
        c.put(&record(1, CommandState::Delivered)).unwrap();
        c.put(&record(1, CommandState::Running)).unwrap();
        assert_eq!(c.get(&[1; 16]).unwrap().unwrap().view().state, "succeeded");
        assert!(c.open_for("host1").is_empty());
        // One final state may still replace another (an expiry racing a result).
        c.put(&record(1, CommandState::Failed)).unwrap();
        assert_eq!(c.get(&[1; 16]).unwrap().unwrap().view().state, "failed");
    }
}
