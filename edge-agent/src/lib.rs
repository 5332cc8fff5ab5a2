//! The edge agent: identity, MQTT session, probes, heartbeats and store-and-forward.
//!
//! - `handle`: starting an agent in-process ([`spawn`], [`AgentOptions`]) and talking to it
//!   ([`AgentHandle`]): what the binary and the end-to-end tests use.
//! - `session`: the MQTT session: connect, pin, status and birth, heartbeats, queue drain,
//!   reconnect, goodbye (docs/wire.md, "Session protocol").
//! - `backoff`: reconnect delays, exponential with full jitter.
//! - `heartbeat`: when heartbeats go out, what they carry, and offline history samples.
//! - `queue`: the store-and-forward queue in sled, and PUBACK tracking.
//! - `state`: persistent counters (`bd_seq`, event ids) and recent command ids in sled.
//! - `identity`: the agent key file and the pinned console key file.
//! - `enrollment`: the enrollment state file (approved, pending, rejected).
//! - `appconfig`: push-config: merging keys into an app's config file, atomic writes.
//! - `service`: acting on managed apps: `systemctl`, or files for the simulator; app
//!   status and version polling.
//! - `polkit`: the polkit rule that lets the service user manage exactly its apps' units.
//! - `script`: `run-script`, gated by `allow_scripts` and the local SHA-256 allow-list.
//! - `inventory`: package collectors (dpkg, rpm, pacman, apk), the simulator's package set,
//!   and the agent side of inventory sync (snapshot, delta, ack).
//! - `probe`: where vitals come from: `sysinfo` on a device, random walks in the simulator.
//! - `status`: the agent's snapshot of itself and the state file `status` reads.
//! - `fuzzing`: bodies of the `cargo fuzz` targets in `edge-agent/fuzz/` (device text parsers).
//! - `update`: update-app: range-resumed downloads, checksum, directory swap and rollback.
//! - `simulate`: many virtual agents in one process.

pub mod appconfig;
pub mod backoff;
pub mod enrollment;
pub mod fuzzing;
pub mod handle;
pub mod heartbeat;
pub mod identity;
pub mod inventory;
pub mod keyspace;
pub mod polkit;
pub mod probe;
pub mod queue;
pub mod script;
pub mod service;
pub mod session;
pub mod simulate;
pub mod state;
pub mod status;
pub mod update;

pub use handle::{spawn, spawn_session, AgentHandle, AgentOptions};
pub use session::SessionConfig;
pub use status::AgentStatusSnapshot;

/// Loads the agent key from `path`, creating it (mode 0600) on first run.
pub use identity::load_or_create as load_or_create_identity;
