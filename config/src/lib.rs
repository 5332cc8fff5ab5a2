//! Loading and validating agent and console configuration (TOML plus `EDGEFLEET_*` env
//! overrides), and reading/writing secret key files.
//!
//! - `agent`: [`AgentConfig`] and its managed apps.
//! - `console`: [`ConsoleConfig`].
//! - `source`: the shared loader: TOML file → env overrides → typed struct → validation,
//!   and the key tables that `docs/config.md` is checked against.
//! - `edit`: `config set`: one key changed in place (comments kept), validated, then an
//!   atomic rename that keeps the file's mode and owner.
//! - `duration`: human durations (`30s`, `5m`) with range checks.
//! - `fuzzing`: bodies of the `cargo fuzz` targets in `config/fuzz/` (file + env loader).
//! - `keyfile`: secret files written atomically with mode 0600; world-readable ones refused.

pub mod agent;
pub mod console;
pub mod duration;
pub mod edit;
pub mod fuzzing;
pub mod keyfile;
pub mod source;

pub use agent::{parse_mqtt_url, AgentConfig, AppConfig, ConfigFormat, MqttUrl};
pub use console::ConsoleConfig;
pub use duration::HumanDuration;
pub use source::{ConfigError, KeyDoc};
