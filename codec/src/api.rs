//! REST request and response types shared by the console and the web UI.
//!
//! Times are unix milliseconds (`u64`). Percentages are whole numbers 0-100. Statuses are
//! lowercase strings.

use serde::{Deserialize, Serialize};

/// The presence status of an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    Online,
    Offline,
    Pending,
    Revoked,
    Unknown,
}

impl AgentStatus {
    pub const ALL: [AgentStatus; 5] = [
        AgentStatus::Online,
        AgentStatus::Offline,
        AgentStatus::Pending,
        AgentStatus::Revoked,
        AgentStatus::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Offline => "offline",
            AgentStatus::Pending => "pending",
            AgentStatus::Revoked => "revoked",
            AgentStatus::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<AgentStatus> {
        AgentStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Why a status changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// The broker published the agent's last-will: the connection died.
    Will,
    /// The agent stopped gracefully.
    Clean,
    /// No heartbeat within the allowed time.
    Timeout,
    Birth,
    Heartbeat,
    /// First seen: the agent proved its key at connect.
    Connect,
    /// Enrolled with a token (pending or active).
    Enrolled,
    /// An operator approved a pending agent.
    Approved,
    /// An operator revoked the agent.
    Revoked,
    /// A new key took over this host record (duplicate-host adoption).
    Adopted,
    /// An operator deleted the host (soft delete).
    Deleted,
}

/// One row of the host list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentSummary {
    pub id: String,
    pub hostname: Option<String>,
    pub display_name: Option<String>,
    pub status: AgentStatus,
    pub stale: bool,
    pub os: Option<String>,
    pub ips: Vec<String>,
    pub cpu: Option<u8>,
    pub mem: Option<u8>,
    pub disk: Option<u8>,
    pub last_seen: Option<u64>,
    /// For a pending agent: an existing host it collides with (same hostname or IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
    /// Alerts firing on this host now.
    #[serde(default)]
    pub alerts: usize,
    /// Effective labels (operator labels over the agent's own).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceView>,
}

/// `GET /api/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentPage {
    pub items: Vec<AgentSummary>,
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: AgentStatus,
    pub cause: Cause,
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppView {
    pub id: String,
    pub status: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vitals {
    pub cpu: u8,
    pub mem: u8,
    pub disk: u8,
    pub load: f32,
    pub uptime_s: u64,
    pub rx_bps: u32,
    pub tx_bps: u32,
}

/// `GET /api/agents/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentDetail {
    #[serde(flatten)]
    pub summary: AgentSummary,
    /// Hex SHA-256 of the agent's public key.
    pub key_fingerprint: String,
    pub kernel: Option<String>,
    pub arch: Option<String>,
    pub agent_version: Option<String>,
    pub boot_time: Option<u64>,
    pub heartbeat_interval_s: Option<u32>,
    pub first_seen: u64,
    pub status_since: u64,
    pub vitals: Option<Vitals>,
    pub apps: Vec<AppView>,
    /// Newest first, at most 100.
    pub status_history: Vec<StatusChange>,
    #[serde(default)]
    pub label_sources: LabelsView,
    /// Ids of the groups this agent is in.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Operator settings on this agent alone (they beat its groups').
    #[serde(default)]
    pub settings: ScopedSettings,
    pub effective: Option<EffectiveSettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub at: u64,
    pub cpu: f32,
    pub mem: f32,
    pub disk: f32,
    /// Mean bytes per second received and sent over the point's interval.
    #[serde(default)]
    pub rx_bps: f32,
    #[serde(default)]
    pub tx_bps: f32,
}

/// `GET /api/agents/{id}/metrics?range=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSeries {
    pub range: String,
    /// Which store the points come from: `raw`, `1m` or `15m`.
    pub resolution: String,
    pub points: Vec<MetricPoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hotspots {
    pub cpu: usize,
    pub mem: usize,
    pub disk: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsCount {
    pub os: String,
    pub count: usize,
}

/// `GET /api/fleet/summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSummary {
    pub total: usize,
    pub online: usize,
    pub offline: usize,
    pub percent_online: f32,
    pub stale: usize,
    pub pending: usize,
    /// Distinct hosts with at least one firing alert.
    #[serde(default)]
    pub firing_alerts: usize,
    pub hotspots: Hotspots,
    pub os: Vec<OsCount>,
}

/// `POST /api/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreate {
    /// Agents enrolling with this token become active at once instead of pending.
    #[serde(default)]
    pub auto_approve: bool,
    /// A duration such as `7d` or `12h`, or `never`. Default `7d`.
    #[serde(default)]
    pub expires: Option<String>,
    /// How many agents may enroll with it. Default unlimited.
    #[serde(default)]
    pub uses: Option<u32>,
}

/// An enrollment token as the API shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub auto_approve: bool,
    pub created_at: u64,
    pub created_by: String,
    pub expires_at: Option<u64>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub revoked: bool,
    /// `active`, `expired`, `used_up` or `revoked`.
    pub state: String,
}

/// The answer to `POST /api/tokens`: the only time the whole token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

/// `POST /api/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreate {
    pub name: String,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyView {
    pub name: String,
    pub role: String,
    pub created_at: u64,
}

/// The answer to `POST /api/keys`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    pub secret: String,
    #[serde(flatten)]
    pub view: ApiKeyView,
}

/// One audit log entry. `hash` chains every entry to the one before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: u64,
    /// The API key name, or `console` for decisions the console made itself.
    pub actor: String,
    pub action: String,
    /// The agent or object acted on.
    pub target: Option<String>,
    pub detail: String,
    /// Hex SHA-256 over the previous hash and this entry.
    pub hash: String,
}

/// `GET /api/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditEntry>,
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
}

/// `GET /api/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerify {
    pub ok: bool,
    pub entries: u64,
    /// The first entry whose hash does not chain, if any.
    pub broken_at: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// One alert: a rule firing for one host, and its resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertView {
    pub id: u64,
    /// `agent-offline`, `agent-flapping`, `stale`, `hotspot-cpu`, `hotspot-mem`, `hotspot-disk`.
    pub rule: String,
    /// The host id (link: `/api/agents/{agent}`).
    pub agent: String,
    pub hostname: Option<String>,
    pub state: AlertState,
    pub started_at: u64,
    pub ended_at: Option<u64>,
    /// Why it fired, in words (e.g. "offline (will) for 10 s").
    pub cause: String,
    /// A silence matched when it fired: no notification was sent.
    pub silenced: bool,
}

/// `GET /api/alerts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertPage {
    /// Newest first.
    pub items: Vec<AlertView>,
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
}

/// `POST /api/silences`: no notifications for matching alerts until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceCreate {
    /// A host id, or every host when absent.
    #[serde(default)]
    pub agent: Option<String>,
    /// Only the members of this group (at the time an alert fires).
    #[serde(default)]
    pub group: Option<String>,
    /// A rule name, or every rule when absent.
    #[serde(default)]
    pub rule: Option<String>,
    /// A duration from now such as `2h`, or unix milliseconds.
    pub until: SilenceUntil,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SilenceUntil {
    At(u64),
    For(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceView {
    pub id: u64,
    pub agent: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    pub rule: Option<String>,
    pub until: u64,
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: u64,
}

/// `POST /api/agents/{id}/restart-app` (and the other command routes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandRequest {
    /// The managed app, for app commands.
    #[serde(default)]
    pub app: Option<String>,
    /// How long the command may wait for an offline agent, e.g. `1h` (the default).
    #[serde(default)]
    pub expires: Option<String>,
    /// update-app: where the agent downloads the `.tar.gz` (http://), its version and hex
    /// SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// push-config: dotted key paths to new values.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub values: std::collections::BTreeMap<String, ConfigScalar>,
    /// run-script: the script text (at most 16 KiB). It runs only on agents whose local
    /// admin enabled scripts and allow-listed this script's SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

/// A config value as JSON writes it: `true`, `5`, `1.5`, `"text"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigScalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// `POST /api/commands/bulk`: one command per target agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BulkCommand {
    /// `restart-app`, `push-config`, `update-app` or `request-heartbeat`.
    pub action: String,
    #[serde(flatten)]
    pub request: CommandRequest,
    /// Target host ids; or, when absent, every active host matching the filters below.
    #[serde(default)]
    pub agents: Option<Vec<String>>,
    #[serde(default)]
    pub status: Option<AgentStatus>,
    #[serde(default)]
    pub os: Option<String>,
    /// Substring of hostname or IP, as in the host list.
    #[serde(default)]
    pub q: Option<String>,
    /// Members of this group.
    #[serde(default)]
    pub group: Option<String>,
    /// A label selector (docs/api.md, "Selectors").
    #[serde(default)]
    pub label: Option<String>,
}

/// One target of a bulk command: its command, or why it got none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkItem {
    pub agent: String,
    pub command: Option<CommandView>,
    pub error: Option<String>,
}

/// `POST /api/artifacts`: a stored file, addressed by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactView {
    pub sha256: String,
    pub size: u64,
    /// Where agents fetch it: `/artifacts/{sha256}` on the console's HTTP address.
    pub path: String,
}

/// One progress step an agent reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandStep {
    pub at: u64,
    pub step: String,
    pub pct: Option<u8>,
}

/// A command and what became of it. `state`: queued, delivered, running, succeeded,
/// failed, rolled_back, rejected, expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandView {
    /// Hex of the 16-byte command id.
    pub id: String,
    /// The host id.
    pub agent: String,
    /// `restart-app`, `push-config`, `update-app`, `request-heartbeat`, `rescan-inventory`.
    pub action: String,
    pub app: Option<String>,
    pub state: String,
    /// The API key name that issued it.
    pub actor: String,
    pub issued_at: u64,
    pub expires_at: u64,
    /// When it was last handed to the broker for the agent.
    pub delivered_at: Option<u64>,
    pub finished_at: Option<u64>,
    pub progress: Vec<CommandStep>,
    /// The agent's result message.
    pub message: Option<String>,
}

/// One event of the live stream (`GET /api/events`, Server-Sent Events). The SSE `id` is
/// `id` and the SSE `event` is the body's `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveEvent {
    pub id: u64,
    pub at: u64,
    #[serde(flatten)]
    pub body: LiveBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveBody {
    /// A presence or approval change.
    Status {
        agent: String,
        status: AgentStatus,
        cause: Cause,
    },
    /// Current vitals, at most one per host every few seconds.
    Vitals {
        agent: String,
        cpu: u8,
        mem: u8,
        disk: u8,
    },
    Alert {
        alert: AlertView,
    },
    Audit {
        entry: AuditEntry,
    },
    /// A command changed state or reported progress.
    Command {
        command: CommandView,
    },
    /// The stream could not resume from `Last-Event-ID` (too old, or the console
    /// restarted): reload state from the REST API.
    Reset,
}

impl LiveBody {
    pub fn name(&self) -> &'static str {
        match self {
            LiveBody::Status { .. } => "status",
            LiveBody::Vitals { .. } => "vitals",
            LiveBody::Alert { .. } => "alert",
            LiveBody::Audit { .. } => "audit",
            LiveBody::Command { .. } => "command",
            LiveBody::Reset => "reset",
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: String,
}

/// One package of a host's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageView {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The collector: `dpkg`, `rpm`, `pacman`, `apk`.
    pub source: String,
    /// Unix ms of the first scan that had it; never changes afterwards.
    pub first_seen: u64,
    /// Unix ms of the last scan that had it.
    pub last_seen: u64,
    /// Gone from the host since `removed_at` (kept so history can be shown).
    pub removed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<u64>,
}

/// `GET /api/agents/{id}/inventory?q=&include_removed=&page=&per_page=&sort=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryPage {
    pub items: Vec<PackageView>,
    /// Rows matching the query (all pages).
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
    /// Installed packages (not removed), whatever the query.
    pub installed: usize,
    /// Removed packages still on record.
    pub removed: usize,
    /// The collector of the last scan; `None` before the first one arrived.
    pub source: Option<String>,
    /// Unix ms of the last scan the console received (a full snapshot, a delta, or an
    /// "unchanged" report).
    pub last_scan: Option<u64>,
    /// The host's scan interval in seconds, as the agent reported it.
    pub interval_s: Option<u64>,
    /// The last scan is older than twice the interval.
    pub stale_scan: bool,
    /// Why the agent has no inventory (e.g. no supported package manager), if it said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A package whose version differs between two hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDiff {
    pub name: String,
    pub arch: String,
    /// Comma-separated when a host has several versions installed.
    pub a: String,
    pub b: String,
}

/// `GET /api/inventory/compare?a=ID&b=ID`: installed packages, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryCompare {
    pub a: String,
    pub b: String,
    pub only_a: Vec<PackageView>,
    pub only_b: Vec<PackageView>,
    pub differs: Vec<VersionDiff>,
    /// Packages with the same version on both.
    pub same: usize,
}

/// A host in a fleet-wide package search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageHost {
    pub id: String,
    pub hostname: Option<String>,
}

/// One version of a package across the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageVersion {
    pub version: String,
    pub count: usize,
    pub hosts: Vec<PackageHost>,
}

/// `GET /api/packages?name=openssl`: every host with the package installed, grouped by
/// version (most hosts first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageSearch {
    pub name: String,
    /// Distinct hosts that have it.
    pub hosts: usize,
    pub versions: Vec<PackageVersion>,
}

// ----- Labels, groups, maintenance and rollouts -----

/// `PUT /api/agents/{id}/labels`: operator labels to set and operator labels to drop.
/// Operator labels win over the agent's own (from its config, reported in its birth).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsUpdate {
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// An agent's labels: the effective set, and where each came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelsView {
    pub labels: std::collections::BTreeMap<String, String>,
    /// Reported by the agent (its config).
    pub agent: std::collections::BTreeMap<String, String>,
    /// Set through the API; these win.
    pub operator: std::collections::BTreeMap<String, String>,
}

/// Settings a group (or one agent) scopes. Absent fields inherit: agent > group > global.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedSettings {
    /// Heartbeat interval pushed to the agents, in seconds (5 to 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_s: Option<u32>,
    /// Seconds offline before `agent-offline` fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_grace_s: Option<u64>,
    /// Percent at or above which `hotspot-*` counts a value as hot (1-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotspot_threshold: Option<u8>,
    /// Seconds a value must stay hot before `hotspot-*` fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotspot_window_s: Option<u64>,
}

/// One resolved setting and where its value comes from: `agent`, `group:<id>` or `global`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveSetting {
    pub value: u64,
    pub source: String,
}

/// The settings that apply to one agent after precedence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveSettings {
    /// `None`: nothing is pushed, the agent keeps its own configured interval.
    pub heartbeat_interval_s: Option<EffectiveSetting>,
    pub offline_grace_s: EffectiveSetting,
    pub hotspot_threshold: EffectiveSetting,
    pub hotspot_window_s: EffectiveSetting,
}

/// `POST /api/groups` and `PUT /api/groups/{id}`. A group has either `members` (static)
/// or `selector` (dynamic), never both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// 1-64 characters of a-z, 0-9, `-` and `_`. Taken from the path on PUT.
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub members: Option<Vec<String>>,
    /// A label selector such as `site in (ferry-*), hw=pi4` (docs/api.md, "Selectors").
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default)]
    pub settings: ScopedSettings,
    /// When an agent is in several groups that set the same field, the lowest priority
    /// number wins (ties: the group id that sorts first).
    #[serde(default)]
    pub priority: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    /// `static` or `dynamic`.
    pub kind: String,
    pub members: Option<Vec<String>>,
    pub selector: Option<String>,
    pub settings: ScopedSettings,
    pub priority: i32,
    /// Agents in the group now.
    pub agents: usize,
    pub created_at: u64,
    pub updated_at: u64,
}

/// `POST /api/agents/{id}/maintenance` (and `/api/groups/{id}/maintenance`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    pub reason: String,
    /// When maintenance ends by itself: a duration such as `2h`, or unix milliseconds.
    #[serde(default)]
    pub until: Option<SilenceUntil>,
    /// Command actions still allowed during maintenance, e.g. `["request-heartbeat"]`.
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceView {
    pub reason: String,
    pub since: u64,
    pub until: Option<u64>,
    pub by: String,
    pub allow: Vec<String>,
}

/// `POST /api/rollouts`: an update-app or push-config applied in waves, each gated on
/// the fleet's health.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutCreate {
    #[serde(default)]
    pub name: Option<String>,
    /// `update-app` or `push-config`.
    pub action: String,
    #[serde(flatten)]
    pub request: CommandRequest,
    /// The target: exactly one of a group id, a label selector or a list of host ids.
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub selector: Option<String>,
    #[serde(default)]
    pub agents: Option<Vec<String>>,
    /// Hosts in the canary wave (0: no canary). Default 1.
    #[serde(default)]
    pub canary: Option<usize>,
    /// Cumulative percentages of the target after the canary, ending at 100. Default
    /// `[100]`.
    #[serde(default)]
    pub waves: Option<Vec<u8>>,
    /// How long a wave's updated hosts must stay healthy before the next wave, e.g. `5m`
    /// (the default).
    #[serde(default)]
    pub soak: Option<String>,
    /// The gate fails when failed and rolled-back hosts exceed this share of the
    /// executed ones (default 5.0).
    #[serde(default)]
    pub max_failure_pct: Option<f32>,
    /// A gate needs at least this many executed hosts to judge the failure rate
    /// (default 1; capped at the hosts updated so far).
    #[serde(default)]
    pub min_executed: Option<usize>,
    /// At most this many hosts start per minute (default: no limit).
    #[serde(default)]
    pub rate_per_minute: Option<u32>,
}

/// The verdict of one wave's health gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateView {
    pub at: u64,
    pub passed: bool,
    /// Hosts with a final result so far (all waves up to this one).
    pub executed: usize,
    /// Failed or rolled back, of `executed`.
    pub failed: usize,
    pub failure_pct: f32,
    /// Updated hosts that were not healthy during the soak, with why.
    pub unhealthy: Vec<String>,
    pub verdict: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveView {
    pub index: usize,
    /// `canary` or the cumulative percentage, e.g. `20%`.
    pub label: String,
    pub hosts: usize,
    /// `waiting`, `running`, `soaking`, `passed`, `failed` or `overridden`.
    pub state: String,
    pub started_at: Option<u64>,
    pub soak_until: Option<u64>,
    pub gate: Option<GateView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutHostView {
    pub agent: String,
    pub hostname: Option<String>,
    pub wave: usize,
    /// `waiting`, `queued` (the agent is offline: the command waits for it), `running`,
    /// `succeeded`, `failed`, `rolled-back`, `expired`, `reverting`, `reverted` or
    /// `revert-failed`.
    pub state: String,
    pub command: Option<String>,
    pub message: Option<String>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    pub id: String,
    pub name: Option<String>,
    pub action: String,
    pub app: Option<String>,
    pub version: Option<String>,
    /// `running`, `paused`, `aborting`, `aborted` or `completed`.
    pub state: String,
    /// Why it is paused or aborted.
    pub reason: Option<String>,
    pub created_by: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub current_wave: usize,
    pub canary: usize,
    pub percents: Vec<u8>,
    pub soak_s: u64,
    pub max_failure_pct: f32,
    pub min_executed: usize,
    pub rate_per_minute: Option<u32>,
    pub waves: Vec<WaveView>,
    pub hosts: Vec<RolloutHostView>,
}
