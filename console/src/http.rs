//! The REST API (axum 0.7): `fn app(fleet) -> Router`. Routes are listed in [`ROUTES`],
//! which `docs/api.md` is checked against.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Extension;
use axum::{Json, Router};
use edgefleet_codec::api::{self, AgentPage, AgentStatus, ApiErrorBody, FleetSummary};

use crate::auth::{KeyRecord, Role};
use crate::fleet::DecisionError;
use crate::fleet::{now_ms, parse_id, Fleet};
use crate::presence::HostRecord;
use crate::store::{Sample, Tier};

mod rollouts;
mod scoped;

/// Every route: method, path, one-line description. Used to build the docs check.
pub const ROUTES: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/",
        "The web UI (`web-ui/dist`), its hashed `/assets/*` and client routes (SPA fallback).",
    ),
    (
        "POST",
        "/demo/login",
        "Demo mode only, loopback only: the admin key, for the UI's \"Log in to the demo\".",
    ),
    ("GET", "/healthz", "Health: `{\"status\":\"ok\"}`, or 503 `degraded` while store writes fail or are refused for low disk space."),
    (
        "GET",
        "/metrics",
        "Prometheus text format counters and gauges.",
    ),
    ("GET", "/api/agents", "Paged, filtered, sorted host list."),
    (
        "GET",
        "/api/agents/:id",
        "One agent: metadata, identity, vitals, apps, status history.",
    ),
    (
        "GET",
        "/api/agents/:id/metrics",
        "Metric series for `range` = 1h, 6h, 24h, 7d or 30d (at most 500 points).",
    ),
    (
        "GET",
        "/api/agents/:id/events",
        "Agent events in event-id order, `after` = last seen id.",
    ),
    (
        "GET",
        "/api/agents/:id/results",
        "Command results in arrival order.",
    ),
    (
        "GET",
        "/api/fleet/summary",
        "Fleet totals, hotspots and OS breakdown.",
    ),
    (
        "POST",
        "/api/agents/:id/approve",
        "Admin: approve a pending agent (409 with the conflict for a duplicate host).",
    ),
    (
        "POST",
        "/api/agents/:id/revoke",
        "Admin: revoke an agent; it is refused at connect from then on.",
    ),
    (
        "DELETE",
        "/api/agents/:id",
        "Admin: soft-delete a host (hidden, record kept for audit).",
    ),
    (
        "GET",
        "/api/tokens",
        "Admin: enrollment tokens (never their secrets).",
    ),
    (
        "POST",
        "/api/tokens",
        "Admin: create an enrollment token; the answer is the only time it is shown.",
    ),
    (
        "DELETE",
        "/api/tokens/:id",
        "Admin: revoke an enrollment token.",
    ),
    ("GET", "/api/keys", "Admin: API key names and roles."),
    (
        "POST",
        "/api/keys",
        "Admin: create an API key; the answer is the only time its secret is shown.",
    ),
    ("DELETE", "/api/keys/:name", "Admin: delete an API key."),
    (
        "GET",
        "/api/audit",
        "The audit log, newest first, paged; `agent` filters by host.",
    ),
    (
        "GET",
        "/api/audit/verify",
        "Walks the audit hash chain and names the first broken entry.",
    ),
    (
        "GET",
        "/api/alerts",
        "Alerts, newest first, paged; `state` = firing or resolved, `agent` = host id.",
    ),
    ("GET", "/api/silences", "Silences in force."),
    (
        "POST",
        "/api/silences",
        "Operator: silence notifications for an agent and/or rule until a time.",
    ),
    ("DELETE", "/api/silences/:id", "Operator: end a silence."),
    (
        "POST",
        "/api/agents/:id/restart-app",
        "Operator: restart a managed app (`{\"app\": ...}`); 202 with the command.",
    ),
    (
        "POST",
        "/api/agents/:id/push-config",
        "Operator: merge `values` into an app's config file, restart, roll back if unhealthy; 202.",
    ),
    (
        "POST",
        "/api/agents/:id/update-app",
        "Operator: download, verify, swap and start a new version; roll back if unhealthy; 202.",
    ),
    (
        "POST",
        "/api/commands/bulk",
        "Operator: one command for a list of agents or every active agent matching status/os/q.",
    ),
    (
        "POST",
        "/api/artifacts",
        "Operator: upload an update archive (body: the bytes); stored by SHA-256.",
    ),
    (
        "GET",
        "/artifacts/:sha256",
        "An uploaded artifact, with Range support (no API key: agents fetch it).",
    ),
    (
        "POST",
        "/api/agents/:id/request-heartbeat",
        "Operator: ask the agent for a heartbeat now; 202 with the command.",
    ),
    (
        "POST",
        "/api/agents/:id/run-script",
        "Admin: run a shell script (`{\"script\": ...}`), only on agents that allow-listed its SHA-256; 202.",
    ),
    (
        "GET",
        "/api/agents/:id/inventory",
        "A host's packages: `q`, `include_removed`, `page`, `per_page` (max 500), `sort` (name, version, first_seen, last_seen, source; `-` for descending).",
    ),
    (
        "GET",
        "/api/agents/:id/inventory.csv",
        "A host's packages as CSV (`include_removed` optional).",
    ),
    (
        "POST",
        "/api/agents/:id/rescan",
        "Operator: ask the agent to scan its packages now; 202 with the command.",
    ),
    (
        "GET",
        "/api/inventory/compare",
        "Installed packages only on `a`, only on `b`, and with differing versions.",
    ),
    (
        "GET",
        "/api/packages",
        "Fleet-wide: every host with package `name`, grouped by version.",
    ),
    (
        "GET",
        "/api/agents/:id/commands",
        "Commands sent to an agent, newest first (at most 100).",
    ),
    (
        "GET",
        "/api/commands/:id",
        "One command: state, progress, result.",
    ),
    (
        "GET",
        "/api/events",
        "Server-Sent Events: status, vitals, alerts, audit; resumes with `Last-Event-ID`.",
    ),
    ("GET", "/api/labels", "Every label key with its values in the fleet."),
    (
        "PUT",
        "/api/agents/:id/labels",
        "Operator: set and remove operator labels (they win over the agent's).",
    ),
    (
        "PUT",
        "/api/agents/:id/settings",
        "Operator: this agent's own scoped settings (beat its groups').",
    ),
    (
        "POST",
        "/api/agents/:id/maintenance",
        "Operator: enter maintenance with a reason, optional end and allowed actions.",
    ),
    (
        "DELETE",
        "/api/agents/:id/maintenance",
        "Operator: end maintenance.",
    ),
    ("GET", "/api/groups", "Every group with its current agent count."),
    ("POST", "/api/groups", "Operator: create a static or dynamic group."),
    ("GET", "/api/groups/:id", "One group."),
    ("PUT", "/api/groups/:id", "Operator: replace a group."),
    ("DELETE", "/api/groups/:id", "Operator: delete a group."),
    (
        "GET",
        "/api/groups/:id/agents",
        "The group's agents, paged like the host list.",
    ),
    (
        "POST",
        "/api/groups/:id/maintenance",
        "Operator: put every current member in maintenance.",
    ),
    (
        "DELETE",
        "/api/groups/:id/maintenance",
        "Operator: end maintenance for every current member.",
    ),    ("GET", "/api/rollouts", "Every rollout, newest first."),
    (
        "POST",
        "/api/rollouts",
        "Operator: start an update-app or push-config rollout in gated waves.",
    ),
    (
        "GET",
        "/api/rollouts/:id",
        "One rollout: waves, gate verdicts, per-host state.",
    ),
    ("POST", "/api/rollouts/:id/pause", "Operator: pause a running rollout."),
    (
        "POST",
        "/api/rollouts/:id/resume",
        "Operator: resume, overriding a failed gate.",
    ),
    (
        "POST",
        "/api/rollouts/:id/abort",
        "Operator: stop and roll back the updated hosts.",
    ),
];

pub const PER_PAGE: [usize; 4] = [25, 50, 100, 200];
const SORT_KEYS: [&str; 7] = [
    "hostname",
    "os",
    "cpu",
    "mem",
    "disk",
    "last_seen",
    "status",
];
const MAX_POINTS: usize = 500;

/// The largest JSON request body. Artifact uploads have their own limit.
pub const MAX_JSON_BODY: usize = 64 * 1024;
/// The largest artifact `POST /api/artifacts` takes.
pub const MAX_ARTIFACT_BODY: usize = 512 << 20;

fn too_large(artifact: bool) -> ApiError {
    ApiError::TooLarge(if artifact {
        "artifact over 512 MiB (the upload limit)".into()
    } else {
        "request body over 64 KiB (the limit for JSON requests)".into()
    })
}

/// axum's own body-limit rejection is a plain-text 413 that names no limit; API clients
/// get the JSON error body every other 4xx has.
async fn json_413(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let artifact = request.uri().path() == "/api/artifacts";
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json {
        return too_large(artifact).into_response();
    }
    response
}

pub fn app(fleet: Arc<Fleet>) -> Router {
    // Every /api route needs a key; `/`, `/healthz` and `/metrics` stay open for browsers,
    // load balancers and Prometheus.
    let api = Router::new()
        .route("/api/agents", get(list))
        .route("/api/agents/:id", get(detail).delete(delete_agent))
        .route("/api/agents/:id/approve", post(approve))
        .route("/api/agents/:id/revoke", post(revoke))
        .route("/api/tokens", get(list_tokens).post(create_token))
        .route("/api/tokens/:id", axum::routing::delete(revoke_token))
        .route("/api/keys", get(list_keys).post(create_key))
        .route("/api/keys/:name", axum::routing::delete(delete_key))
        .route("/api/audit", get(audit))
        .route("/api/audit/verify", get(audit_verify))
        .route("/api/agents/:id/restart-app", post(restart_app))
        .route("/api/agents/:id/request-heartbeat", post(request_heartbeat))
        .route("/api/agents/:id/run-script", post(run_script))
        .route("/api/agents/:id/inventory", get(inventory_list))
        .route("/api/agents/:id/inventory.csv", get(inventory_csv))
        .route("/api/agents/:id/rescan", post(rescan))
        .route("/api/inventory/compare", get(inventory_compare))
        .route("/api/packages", get(package_search))
        .route("/api/agents/:id/push-config", post(push_config))
        .route("/api/agents/:id/update-app", post(update_app))
        .route("/api/commands/bulk", post(bulk_command))
        .route(
            "/api/artifacts",
            post(upload_artifact).layer(axum::extract::DefaultBodyLimit::max(MAX_ARTIFACT_BODY)),
        )
        .route("/api/agents/:id/commands", get(agent_commands))
        .route("/api/commands/:id", get(command))
        .route("/api/alerts", get(alerts))
        .route("/api/silences", get(silences).post(create_silence))
        .route("/api/silences/:id", axum::routing::delete(delete_silence))
        .route("/api/events", get(live_events))
        .route("/api/agents/:id/metrics", get(series))
        .route("/api/agents/:id/events", get(events))
        .route("/api/agents/:id/results", get(results))
        .route("/api/fleet/summary", get(summary))
        .merge(scoped::routes())
        .merge(rollouts::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            fleet.clone(),
            refuse_writes_on_low_space,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            fleet.clone(),
            require_key,
        ));
    Router::new()
        .merge(crate::ui::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/artifacts/:sha256", get(artifact))
        .merge(api)
        .fallback(crate::ui::fallback)
        // Bodies over the JSON limit are refused before they are buffered.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(axum::middleware::from_fn(json_413))
        .with_state(fleet)
}

/// Checks `Authorization: Bearer <key>`. Read-only routes need at least [`Role::Viewer`].
async fn require_key(
    State(fleet): State<Arc<Fleet>>,
    peer: Option<axum::extract::ConnectInfo<std::net::SocketAddr>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let addr = peer.map(|axum::extract::ConnectInfo(a)| a.ip());
    if fleet.api_keys.locked_out(addr) {
        return Err(ApiError::TooManyRequests);
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(secret) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        fleet.api_keys.note_failure(addr);
        return Err(ApiError::Unauthorized(
            "missing `Authorization: Bearer <api key>` header".into(),
        ));
    };
    match fleet.api_keys.check(secret.trim()) {
        Some(record) if record.role >= Role::Viewer => {
            req.extensions_mut().insert(record);
            Ok(next.run(req).await)
        }
        Some(_) => Err(ApiError::Forbidden(
            "this key's role does not allow that".into(),
        )),
        None => {
            fleet.api_keys.note_failure(addr);
            tracing::warn!(client = ?addr, "rejected an unknown API key");
            Err(ApiError::Unauthorized("unknown API key".into()))
        }
    }
}

/// While the free-space guard refuses writes, every API request that changes something
/// (any method but GET, HEAD and OPTIONS) is answered 507 before its handler runs, so no
/// client is told a change was made that was not stored. Reads go on. Runs after the key
/// check: an unauthenticated client learns nothing it could not read from `/healthz`.
async fn refuse_writes_on_low_space(
    State(fleet): State<Arc<Fleet>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    use axum::http::Method;
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    match fleet.store.refusal() {
        Some(refusal) if !reads.contains(req.method()) => Err(low_space(&refusal)),
        _ => Ok(next.run(req).await),
    }
}

fn low_space(refusal: &crate::space::Refusal) -> ApiError {
    ApiError::InsufficientStorage(format!("nothing was changed: {refusal}"))
}

/// The one error type of the API. 4xx carry a precise message; 5xx a generic one, with the
/// cause logged.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    /// 413: a request body over the route's limit.
    TooLarge(String),
    TooManyRequests,
    /// 507: the free-space guard refuses writes. The one 5xx with a precise message: the
    /// cause is the operator's to fix, and `/healthz` shows it to anyone anyway.
    InsufficientStorage(String),
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            ApiError::TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed API key attempts from this address; wait a minute".to_string(),
            ),
            ApiError::InsufficientStorage(m) => (StatusCode::INSUFFICIENT_STORAGE, m),
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; see the console log".to_string(),
                )
            }
        };
        (status, Json(ApiErrorBody { error: message })).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::LowSpace(refusal) => low_space(&refusal),
            other => ApiError::Internal(format!("{other:#}")),
        }
    }
}

impl From<DecisionError> for ApiError {
    fn from(e: DecisionError) -> Self {
        match e {
            DecisionError::NotFound(id) => ApiError::NotFound(format!("no agent {id}")),
            DecisionError::Conflict(m) => ApiError::Conflict(m),
            DecisionError::Store(e) => e.into(),
        }
    }
}

/// 403 unless `key` has at least `role`.
fn require(key: &KeyRecord, role: Role) -> Result<(), ApiError> {
    if key.role >= role {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "this needs the {} role; the key {:?} is {}",
            role.as_str(),
            key.name,
            key.role.as_str()
        )))
    }
}

/// A JSON body, with a 400 that says what is wrong instead of axum's plain-text rejection.
fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.len() > MAX_JSON_BODY {
        return Err(too_large(false));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// Runs a blocking sled or sign operation off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("task failed: {e}")))?
}

async fn approve(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
) -> Result<Json<api::AgentSummary>, ApiError> {
    decide(fleet, key, id, Fleet::approve).await
}

async fn revoke(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
) -> Result<Json<api::AgentSummary>, ApiError> {
    decide(fleet, key, id, Fleet::revoke).await
}

/// An admin decision on one host, answered with the host row.
async fn decide(
    fleet: Arc<Fleet>,
    key: KeyRecord,
    id: String,
    decision: fn(&Fleet, &str, &str) -> Result<HostRecord, DecisionError>,
) -> Result<Json<api::AgentSummary>, ApiError> {
    require(&key, Role::Admin)?;
    find(&fleet, &id)?;
    blocking(move || {
        let host = decision(&fleet, &id, &key.name)?;
        Ok(Json(fleet.summary_of(&host, now_ms())))
    })
    .await
}

async fn delete_agent(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&key, Role::Admin)?;
    find(&fleet, &id)?;
    blocking(move || {
        fleet.delete(&id, &key.name)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

async fn list_tokens(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
) -> Result<Json<Vec<api::TokenView>>, ApiError> {
    require(&key, Role::Admin)?;
    let now = now_ms();
    let tokens = fleet.tokens.list()?;
    Ok(Json(tokens.iter().map(|t| t.view(now)).collect()))
}

async fn create_token(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<api::TokenCreated>), ApiError> {
    require(&key, Role::Admin)?;
    let req: api::TokenCreate = if body.is_empty() {
        api::TokenCreate::default()
    } else {
        json_body(&body)?
    };
    blocking(move || {
        let now = now_ms();
        let fingerprint = fleet.identity.public_key().fingerprint();
        let (token, record) = fleet
            .tokens
            .create(&req, &key.name, fingerprint, now)
            .map_err(|e| match e {
                crate::enrollment::CreateError::Invalid(m) => ApiError::BadRequest(m),
                crate::enrollment::CreateError::Store(e) => e.into(),
            })?;
        let detail = format!(
            "auto_approve={} expires_at={:?} uses={:?}",
            record.auto_approve, record.expires_at, record.max_uses
        );
        fleet.record_audit(&key.name, "token_create", Some(&record.id), &detail)?;
        Ok((
            StatusCode::CREATED,
            Json(api::TokenCreated {
                token: token.to_string(),
                view: record.view(now),
            }),
        ))
    })
    .await
}

async fn revoke_token(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
) -> Result<Json<api::TokenView>, ApiError> {
    require(&key, Role::Admin)?;
    blocking(move || {
        let now = now_ms();
        let record = fleet
            .tokens
            .revoke(&id, now)?
            .ok_or_else(|| ApiError::NotFound(format!("no token {id:?}")))?;
        fleet.record_audit(&key.name, "token_revoke", Some(&record.id), "")?;
        Ok(Json(record.view(now)))
    })
    .await
}

fn key_view(r: &KeyRecord) -> api::ApiKeyView {
    api::ApiKeyView {
        name: r.name.clone(),
        role: r.role.as_str().to_string(),
        created_at: r.created,
    }
}

async fn list_keys(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
) -> Result<Json<Vec<api::ApiKeyView>>, ApiError> {
    require(&key, Role::Admin)?;
    let keys = fleet
        .api_keys
        .list()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(keys.iter().map(key_view).collect()))
}

async fn create_key(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<api::ApiKeyCreated>), ApiError> {
    require(&key, Role::Admin)?;
    let req: api::ApiKeyCreate = json_body(&body)?;
    let role = Role::parse(&req.role).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "role must be viewer, operator or admin, got {:?}",
            req.role
        ))
    })?;
    let name = req.name.trim().to_string();
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(ApiError::BadRequest(
            "name must be 1-64 characters of a-z, A-Z, 0-9, '-', '_' or '.'".into(),
        ));
    }
    blocking(move || {
        let internal = |e: sled::Error| ApiError::Internal(e.to_string());
        if fleet
            .api_keys
            .list()
            .map_err(internal)?
            .iter()
            .any(|k| k.name == name)
        {
            return Err(ApiError::Conflict(format!("a key named {name:?} exists")));
        }
        let now = now_ms();
        let secret = fleet.api_keys.create(&name, role, now).map_err(internal)?;
        fleet.record_audit(&key.name, "key_create", Some(&name), role.as_str())?;
        Ok((
            StatusCode::CREATED,
            Json(api::ApiKeyCreated {
                secret,
                view: api::ApiKeyView {
                    name,
                    role: role.as_str().to_string(),
                    created_at: now,
                },
            }),
        ))
    })
    .await
}

async fn delete_key(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&key, Role::Admin)?;
    blocking(move || {
        let internal = |e: sled::Error| ApiError::Internal(e.to_string());
        let keys = fleet.api_keys.list().map_err(internal)?;
        let Some(target) = keys.iter().find(|k| k.name == name) else {
            return Err(ApiError::NotFound(format!("no key named {name:?}")));
        };
        if target.role == Role::Admin && keys.iter().filter(|k| k.role == Role::Admin).count() == 1
        {
            return Err(ApiError::Conflict(
                "this is the last admin key; create another admin key first".into(),
            ));
        }
        fleet.api_keys.delete(&name).map_err(internal)?;
        fleet.record_audit(&key.name, "key_delete", Some(&name), "")?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

async fn audit(
    State(fleet): State<Arc<Fleet>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<api::AuditPage>, ApiError> {
    only_params(
        &params,
        &["page", "per_page", "agent", "action", "since", "last"],
    )?;
    let q = ListQuery::parse(
        &params
            .iter()
            .filter(|(k, _)| ["page", "per_page"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )?;
    let since = match params.get("since") {
        None => None,
        Some(s) => Some(parse_since(s)?),
    };
    let (page, per_page) = match params.get("last") {
        None => (q.page, q.per_page),
        Some(n) => {
            let n: usize = n
                .parse()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("`last` must be 1 to 1000, got {n:?}"))
                })?;
            (1, n)
        }
    };
    let filter = crate::audit::AuditFilter {
        target: params.get("agent").cloned(),
        action: params.get("action").cloned(),
        since,
    };
    blocking(move || Ok(Json(fleet.audit.page(&filter, page, per_page)?))).await
}

/// `since`: unix milliseconds, or a duration back from now such as `24h`.
fn parse_since(text: &str) -> Result<u64, ApiError> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_duration(text.trim())
        .map(|d| now_ms().saturating_sub(d.as_millis() as u64))
        .map_err(|_| {
            ApiError::BadRequest(format!(
                "`since` must be unix milliseconds or a duration such as 24h, got {text:?}"
            ))
        })
}

async fn audit_verify(State(fleet): State<Arc<Fleet>>) -> Result<Json<api::AuditVerify>, ApiError> {
    blocking(move || Ok(Json(fleet.audit.verify()?))).await
}

/// Default and bounds of a command's time to live.
const COMMAND_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

fn command_request(body: &[u8]) -> Result<(api::CommandRequest, std::time::Duration), ApiError> {
    let req: api::CommandRequest = if body.is_empty() {
        api::CommandRequest::default()
    } else {
        json_body(body)?
    };
    let ttl = match req.expires.as_deref() {
        None => COMMAND_TTL,
        Some(text) => {
            let d = humantime::parse_duration(text.trim()).map_err(|e| {
                ApiError::BadRequest(format!("expires: {e} (a duration such as `1h`)"))
            })?;
            if d < std::time::Duration::from_secs(1)
                || d > std::time::Duration::from_secs(7 * 86400)
            {
                return Err(ApiError::BadRequest(format!(
                    "expires: must be between 1s and 7d (got {text:?})"
                )));
            }
            d
        }
    };
    Ok((req, ttl))
}

async fn send_command(
    fleet: Arc<Fleet>,
    key: KeyRecord,
    id: String,
    action: edgefleet_codec::CommandAction,
    ttl: std::time::Duration,
) -> Result<(StatusCode, Json<api::CommandView>), ApiError> {
    require(&key, Role::Operator)?;
    find(&fleet, &id)?;
    blocking(move || {
        let record = fleet.issue_command(&id, action, ttl, &key.name)?;
        Ok((StatusCode::ACCEPTED, Json(record.view())))
    })
    .await
}

/// The command for `action` from a request body, validated (400 with the reason).
fn build_action(
    action: &str,
    req: api::CommandRequest,
) -> Result<edgefleet_codec::CommandAction, ApiError> {
    use edgefleet_codec::{CommandAction, ConfigValue};
    let missing = |what: &str| ApiError::BadRequest(format!("`{what}` is required for {action}"));
    let app = || {
        req.app
            .clone()
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| missing("app"))
    };
    Ok(match action {
        "restart-app" => CommandAction::RestartApp { app: app()? },
        "request-heartbeat" => CommandAction::RequestHeartbeat,
        "rescan-inventory" => CommandAction::RescanInventory,
        "push-config" => {
            let app = app()?;
            if req.values.is_empty() {
                return Err(missing("values"));
            }
            let mut values = std::collections::BTreeMap::new();
            for (key, v) in req.values {
                if key.is_empty() || key.len() > 256 || key.split('.').any(str::is_empty) {
                    return Err(ApiError::BadRequest(format!(
                        "values: {key:?} is not a dotted key path"
                    )));
                }
                let v = match v {
                    api::ConfigScalar::Bool(b) => ConfigValue::Bool(b),
                    api::ConfigScalar::Int(n) => ConfigValue::Int(n),
                    api::ConfigScalar::Float(f) => ConfigValue::Float(f),
                    api::ConfigScalar::Str(s) => ConfigValue::Str(s),
                };
                values.insert(key, v);
            }
            CommandAction::PushConfig { app, values }
        }
        "update-app" => {
            let app = app()?;
            let url = req.url.ok_or_else(|| missing("url"))?;
            if !url.starts_with("http://") {
                return Err(ApiError::BadRequest(format!(
                    "url: agents fetch artifacts over http:// (integrity comes from the signed sha256), got {url:?}"
                )));
            }
            let version = req.version.ok_or_else(|| missing("version"))?;
            let sha = req.sha256.ok_or_else(|| missing("sha256"))?;
            let sha256: [u8; 32] = (sha.len() == 64)
                .then(|| {
                    (0..32)
                        .map(|i| u8::from_str_radix(sha.get(i * 2..i * 2 + 2)?, 16).ok())
                        .collect::<Option<Vec<u8>>>()
                })
                .flatten()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("sha256: expected 64 hex digits, got {sha:?}"))
                })?;
            CommandAction::UpdateApp {
                app,
                url,
                version,
                sha256,
            }
        }
        "run-script" => {
            let script = req.script.filter(|s| !s.trim().is_empty()).ok_or_else(|| missing("script"))?;
            if script.len() > edgefleet_codec::MAX_SCRIPT_BYTES {
                return Err(ApiError::BadRequest(format!(
                    "script: {} bytes, at most {} allowed",
                    script.len(),
                    edgefleet_codec::MAX_SCRIPT_BYTES
                )));
            }
            CommandAction::RunScript { script }
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "action must be restart-app, push-config, update-app, request-heartbeat, rescan-inventory or run-script, got {other:?}"
            )))
        }
    })
}

type CommandAnswer = Result<(StatusCode, Json<api::CommandView>), ApiError>;

/// One command to one agent, for every `POST /api/agents/{id}/<action>` route: the body
/// is a [`api::CommandRequest`] (`expires` and the action's fields), and an app command
/// naming an app the agent does not report is a 404 before anything is signed.
async fn agent_command(
    action: &'static str,
    fleet: Arc<Fleet>,
    key: KeyRecord,
    id: String,
    body: &[u8],
) -> CommandAnswer {
    if action == "run-script" {
        // Scripts are the one command beyond the fixed set, so they take an admin key.
        require(&key, Role::Admin)?;
    }
    let (req, ttl) = command_request(body)?;
    let action = build_action(action, req)?;
    use edgefleet_codec::CommandAction as A;
    let app = match &action {
        A::RestartApp { app } | A::PushConfig { app, .. } | A::UpdateApp { app, .. } => Some(app),
        A::RollbackApp { app } => Some(app),
        A::RequestHeartbeat
        | A::RescanInventory
        | A::RunScript { .. }
        | A::SetHeartbeatInterval { .. } => None,
    };
    if let (Some(host), Some(app)) = (fleet.host(&id), app) {
        if !host.apps.is_empty() && !host.apps.iter().any(|a| a.id == *app) {
            return Err(ApiError::NotFound(format!(
                "agent {id} has no managed app {app:?} (it reports: {})",
                host.apps
                    .iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    send_command(fleet, key, id, action, ttl).await
}

/// The per-action routes: each names its action for [`agent_command`].
macro_rules! command_route {
    ($name:ident, $action:literal) => {
        async fn $name(
            State(fleet): State<Arc<Fleet>>,
            Extension(key): Extension<KeyRecord>,
            Path(id): Path<String>,
            body: axum::body::Bytes,
        ) -> CommandAnswer {
            agent_command($action, fleet, key, id, &body).await
        }
    };
}

command_route!(restart_app, "restart-app");
command_route!(push_config, "push-config");
command_route!(update_app, "update-app");
command_route!(request_heartbeat, "request-heartbeat");
command_route!(rescan, "rescan-inventory");
command_route!(run_script, "run-script");

/// `POST /api/commands/bulk`: the same command for a list of hosts or every active host
/// matching a filter; one command (or one error) per host.
async fn bulk_command(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Vec<api::BulkItem>>), ApiError> {
    require(&key, Role::Operator)?;
    let bulk: api::BulkCommand = json_body(&body)?;
    if bulk.action == "run-script" {
        require(&key, Role::Admin)?;
    }
    let (_, ttl) = command_request(&serde_json::to_vec(&bulk.request).expect("serializes"))?;
    let action = build_action(&bulk.action, bulk.request.clone())?;
    let targets: Vec<String> = match &bulk.agents {
        Some(list) => {
            if list.is_empty() || list.len() > 10_000 {
                return Err(ApiError::BadRequest(
                    "agents: give 1 to 10000 host ids".into(),
                ));
            }
            list.clone()
        }
        None => {
            let q = bulk.q.as_ref().map(|q| q.trim().to_lowercase());
            let needle = q.as_deref().map(Needle::new);
            let filter =
                scoped::HostFilter::parse(&fleet, bulk.group.as_ref(), bulk.label.as_ref())?;
            let mut ids: Vec<String> = filter
                .apply(fleet.snapshot())
                .into_iter()
                .filter(|h| h.approval == crate::presence::Approval::Active)
                .filter(|h| matches_query(h, bulk.status, bulk.os.as_ref(), needle.as_ref()))
                .map(|h| h.id)
                .collect();
            ids.sort();
            ids
        }
    };
    blocking(move || {
        let items = targets
            .into_iter()
            .map(
                |agent| match fleet.issue_command(&agent, action.clone(), ttl, &key.name) {
                    Ok(r) => api::BulkItem {
                        agent,
                        command: Some(r.view()),
                        error: None,
                    },
                    Err(e) => api::BulkItem {
                        error: Some(match e {
                            crate::fleet::DecisionError::NotFound(id) => format!("no agent {id}"),
                            other => other.to_string(),
                        }),
                        agent,
                        command: None,
                    },
                },
            )
            .collect();
        Ok((StatusCode::ACCEPTED, Json(items)))
    })
    .await
}

async fn upload_artifact(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<api::ArtifactView>), ApiError> {
    require(&key, Role::Operator)?;
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "the body is the artifact; it is empty".into(),
        ));
    }
    let dir = fleet
        .artifacts_dir
        .get()
        .cloned()
        .ok_or_else(|| ApiError::Internal("artifacts directory not configured".into()))?;
    blocking(move || {
        let size = body.len() as u64;
        let sha = crate::artifacts::store(&dir, &body)
            .map_err(|e| ApiError::Internal(format!("storing an artifact: {e}")))?;
        fleet.record_audit(
            &key.name,
            "artifact_upload",
            Some(&sha),
            &format!("{size} bytes"),
        )?;
        Ok((
            StatusCode::CREATED,
            Json(api::ArtifactView {
                path: format!("/artifacts/{sha}"),
                sha256: sha,
                size,
            }),
        ))
    })
    .await
}

async fn artifact(
    State(fleet): State<Arc<Fleet>>,
    Path(sha): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    if !crate::artifacts::valid_name(&sha) {
        return Err(ApiError::NotFound(
            "artifacts are named by 64 hex digits".into(),
        ));
    }
    let Some(dir) = fleet.artifacts_dir.get() else {
        return Err(ApiError::NotFound(format!("no artifact {sha}")));
    };
    let mut file = tokio::fs::File::open(dir.join(&sha))
        .await
        .map_err(|_| ApiError::NotFound(format!("no artifact {sha}")))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match crate::artifacts::parse_range(range, len) {
        None => (StatusCode::OK, 0, len.saturating_sub(1)),
        Some(Ok((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Some(Err(())) => {
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response())
        }
    };
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let count = if len == 0 { 0 } else { end - start + 1 };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file.take(count)));
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, count.to_string()),
            (header::ACCEPT_RANGES, "bytes".to_string()),
        ],
        body,
    )
        .into_response();
    if status == StatusCode::PARTIAL_CONTENT {
        response.headers_mut().insert(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{len}")
                .parse()
                .expect("a valid header value"),
        );
    }
    Ok(response)
}

/// Refuses query parameters outside `allowed`, so a typo is a 400, not a silent default.
fn only_params(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::BadRequest(format!(
            "unknown query parameter `{k}`; allowed: {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn flag(params: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match params.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "`{name}` must be true or false, got {other:?}"
        ))),
    }
}

fn number(
    params: &HashMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`{name}` must be a whole number from 1 to {max}, got {v:?}"
                ))
            }),
    }
}

async fn inventory_list(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<api::InventoryPage>, ApiError> {
    only_params(
        &params,
        &["q", "include_removed", "page", "per_page", "sort"],
    )?;
    let host = find(&fleet, &id)?;
    let sort = params.get("sort").cloned().unwrap_or_else(|| "name".into());
    if !crate::inventory::SORTS.contains(&sort.trim_start_matches('-')) {
        return Err(ApiError::BadRequest(format!(
            "`sort` must be one of {} (with `-` for descending), got {sort:?}",
            crate::inventory::SORTS.join(", ")
        )));
    }
    let q = crate::inventory::ListQuery {
        q: params.get("q").filter(|q| !q.is_empty()).cloned(),
        include_removed: flag(&params, "include_removed")?,
        page: number(&params, "page", 1, usize::MAX)?,
        per_page: number(&params, "per_page", 100, 500)?,
        sort,
    };
    blocking(move || Ok(Json(fleet.inventory.list(&host.id, &q, now_ms())?))).await
}

async fn inventory_csv(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    only_params(&params, &["include_removed"])?;
    let host = find(&fleet, &id)?;
    let removed = flag(&params, "include_removed")?;
    let name = host.hostname.clone().unwrap_or_else(|| host.id.clone());
    let csv = blocking(move || Ok(fleet.inventory.csv(&host.id, removed)?)).await?;
    let file: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}-packages.csv\""),
            ),
        ],
        csv,
    )
        .into_response())
}

async fn inventory_compare(
    State(fleet): State<Arc<Fleet>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<api::InventoryCompare>, ApiError> {
    only_params(&params, &["a", "b"])?;
    let side = |k: &str| {
        params
            .get(k)
            .ok_or_else(|| ApiError::BadRequest(format!("`{k}` (a host id) is required")))
            .and_then(|id| find(&fleet, id))
    };
    let (a, b) = (side("a")?, side("b")?);
    blocking(move || Ok(Json(fleet.inventory.compare(&a.id, &b.id)?))).await
}

async fn package_search(
    State(fleet): State<Arc<Fleet>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<api::PackageSearch>, ApiError> {
    only_params(&params, &["name"])?;
    let name = params
        .get("name")
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty() && n.len() <= 256 && !n.contains('\0'))
        .ok_or_else(|| ApiError::BadRequest("`name` (an exact package name) is required".into()))?;
    blocking(move || {
        let mut found = fleet.inventory.search(&name)?;
        let ids = found
            .versions
            .iter()
            .flat_map(|v| v.hosts.iter().map(|h| h.id.as_str()));
        let names = fleet.hostnames(ids);
        for h in found.versions.iter_mut().flat_map(|v| v.hosts.iter_mut()) {
            h.hostname = names.get(&h.id).cloned().flatten();
        }
        Ok(Json(found))
    })
    .await
}

async fn agent_commands(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<api::CommandView>>, ApiError> {
    find(&fleet, &id)?;
    blocking(move || {
        Ok(Json(
            fleet
                .commands
                .for_agent(&id, 100)?
                .iter()
                .map(|r| r.view())
                .collect(),
        ))
    })
    .await
}

async fn command(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
) -> Result<Json<api::CommandView>, ApiError> {
    let raw = crate::commands::parse_hex_id(&id).ok_or_else(|| {
        ApiError::NotFound(format!("no command {id:?}: command ids are 32 hex digits"))
    })?;
    let record = fleet
        .commands
        .get(&raw)?
        .ok_or_else(|| ApiError::NotFound(format!("no command {id}")))?;
    Ok(Json(record.view()))
}

async fn alerts(
    State(fleet): State<Arc<Fleet>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<api::AlertPage>, ApiError> {
    only_params(&params, &["page", "per_page", "state", "agent"])?;
    let state = match params.get("state").map(String::as_str) {
        None => None,
        Some("firing") => Some(api::AlertState::Firing),
        Some("resolved") => Some(api::AlertState::Resolved),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`state` must be firing or resolved, got {other:?}"
            )))
        }
    };
    let q = ListQuery::parse(
        &params
            .iter()
            .filter(|(k, _)| ["page", "per_page"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )?;
    let agent = params.get("agent").cloned();
    blocking(move || {
        Ok(Json(fleet.alerts.page(
            state,
            agent.as_deref(),
            q.page,
            q.per_page,
        )?))
    })
    .await
}

async fn silences(State(fleet): State<Arc<Fleet>>) -> Json<Vec<api::SilenceView>> {
    Json(fleet.alerts.silences(now_ms()))
}

async fn create_silence(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<api::SilenceView>), ApiError> {
    require(&key, Role::Operator)?;
    let req: api::SilenceCreate = json_body(&body)?;
    if let Some(agent) = &req.agent {
        find(&fleet, agent)?;
    }
    blocking(move || {
        let view = fleet
            .alerts
            .add_silence(&req, &key.name, now_ms())
            .map_err(|e| match e {
                crate::alerts::SilenceError::Invalid(m) => ApiError::BadRequest(m),
                crate::alerts::SilenceError::Store(e) => e.into(),
            })?;
        let detail = format!(
            "silence {}: rule {} until {}{}",
            view.id,
            view.rule.as_deref().unwrap_or("(all)"),
            view.until,
            view.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        let target = view.agent.clone().unwrap_or_else(|| "(all agents)".into());
        fleet.record_audit(&key.name, "silence", Some(&target), &detail)?;
        Ok((StatusCode::CREATED, Json(view)))
    })
    .await
}

async fn delete_silence(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&key, Role::Operator)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("silence ids are numbers, got {id:?}")))?;
    blocking(move || {
        if !fleet.alerts.remove_silence(id)? {
            return Err(ApiError::NotFound(format!("no silence {id}")));
        }
        fleet.record_audit(&key.name, "unsilence", None, &format!("silence {id}"))?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `GET /api/events`: the backlog after `Last-Event-ID`, then live events, until the client
/// goes or the console stops. A client that falls more than the channel behind gets a
/// `reset` event (reload from the API) instead of a silent gap.
async fn live_events(
    State(fleet): State<Arc<Fleet>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    let last = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest("Last-Event-ID must be an event id (a number)".into())
                })?,
        ),
    };
    let sub = fleet.live.subscribe(last);
    let sse = |e: &api::LiveEvent| -> Result<Event, std::convert::Infallible> {
        let data = serde_json::to_string(e).expect("live events serialize");
        Ok(Event::default()
            .id(e.id.to_string())
            .event(e.body.name())
            .data(data))
    };
    let backlog = futures_util::stream::iter(
        sub.backlog
            .into_iter()
            .map(move |e| sse(&e))
            .collect::<Vec<_>>(),
    );
    let closed = fleet.live.closed.clone();
    let live = futures_util::stream::unfold(sub.live, move |mut rx| {
        let closed = closed.clone();
        async move {
            let next = tokio::select! {
                _ = closed.cancelled() => return None,
                next = rx.recv() => next,
            };
            match next {
                Ok(e) => Some((sse(&e), rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let reset = api::LiveEvent {
                        id: 0,
                        at: now_ms(),
                        body: api::LiveBody::Reset,
                    };
                    let data = serde_json::to_string(&reset).expect("serializes");
                    Some((Ok(Event::default().event("reset").data(data)), rx))
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
            }
        }
    });
    Ok(Sse::new(backlog.chain(live))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `200 {"status":"ok"}`, or `503 {"status":"degraded", ...}` while store writes fail or
/// are refused for low disk space, so a load balancer or an operator's probe sees a
/// console that cannot keep what it ingests. `store.reason` is `write_error` (sled failed;
/// after ENOSPC that lasts until a restart) or `low_space` (the guard refuses writes; it
/// clears by itself once space is freed).
async fn healthz(State(fleet): State<Arc<Fleet>>) -> Response {
    let (reason, since, error) = match (fleet.store.write_failure(), fleet.store.refusal()) {
        (None, None) => return Json(serde_json::json!({"status": "ok"})).into_response(),
        (Some(failure), _) => ("write_error", failure.since, failure.error),
        (None, Some(refusal)) => ("low_space", refusal.since, refusal.to_string()),
    };
    let guard = fleet.store.guard();
    let mut store = serde_json::json!({
        "writable": false,
        "reason": reason,
        "since": since,
        "error": error,
        "reserve_bytes": guard.reserve(),
    });
    if guard.reserve() > 0 {
        store["free_bytes"] = guard.free().into();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({"status": "degraded", "store": store})),
    )
        .into_response()
}

async fn metrics(State(fleet): State<Arc<Fleet>>) -> Response {
    let (agents_online, agents_total) = fleet.with_hosts(|hosts| {
        let online = hosts
            .iter()
            .filter(|h| h.status == AgentStatus::Online)
            .count();
        (online, hosts.len())
    });
    let gauges = crate::metrics::Gauges {
        agents_online,
        agents_total,
        sled_bytes: fleet.store.size_on_disk(),
        broker_queue_dropped: crate::broker_dropped().0,
        broker_queue_dropped_other: crate::broker_dropped().1,
        broker_connects_refused_per_ip: crate::broker_refused_per_ip(),
        broker_connected: fleet
            .broker_connected
            .load(std::sync::atomic::Ordering::Relaxed),
        store_free_bytes: {
            let guard = fleet.store.guard();
            (guard.reserve() > 0 && guard.free() != u64::MAX).then(|| guard.free())
        },
        store_reserve_bytes: fleet.store.guard().reserve(),
        store_writes_refused: fleet.store.is_refusing(),
        store_backlog: fleet.backlog_len(),
    };
    let mut text = fleet.metrics.render(gauges);
    let stats = &fleet.notifier.stats;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    text.push_str(&format!(
        "# HELP edgefleet_alerts_firing_hosts Hosts with at least one firing alert.\n# TYPE edgefleet_alerts_firing_hosts gauge\nedgefleet_alerts_firing_hosts {}\n\
         # HELP edgefleet_webhook_delivered_total Webhook notifications delivered (2xx).\n# TYPE edgefleet_webhook_delivered_total counter\nedgefleet_webhook_delivered_total {}\n\
         # HELP edgefleet_webhook_failures_total Failed webhook delivery attempts (each retried).\n# TYPE edgefleet_webhook_failures_total counter\nedgefleet_webhook_failures_total {}\n\
         # HELP edgefleet_webhook_given_up_total Webhook notifications given up after alerts.webhook_max_age.\n# TYPE edgefleet_webhook_given_up_total counter\nedgefleet_webhook_given_up_total {}\n\
         # HELP edgefleet_webhook_backlog Webhook notifications waiting in the outbox.\n# TYPE edgefleet_webhook_backlog gauge\nedgefleet_webhook_backlog {}\n",
        fleet.alerts.firing_hosts(),
        load(&stats.delivered),
        load(&stats.failed_attempts),
        load(&stats.given_up),
        fleet.notifier.backlog(),
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The parsed query of `GET /api/agents`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub page: usize,
    pub per_page: usize,
    pub q: Option<String>,
    pub status: Option<AgentStatus>,
    pub os: Option<String>,
    pub sort: &'static str,
    pub desc: bool,
}

impl ListQuery {
    pub fn parse(params: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
        only_params(
            params,
            &[
                "page", "per_page", "q", "status", "os", "sort", "order", "group", "label",
            ],
        )?;
        let page = match params.get("page") {
            None => 1,
            Some(p) => p.parse::<usize>().ok().filter(|p| *p >= 1).ok_or_else(|| {
                ApiError::BadRequest(format!("`page` must be a whole number from 1, got {p:?}"))
            })?,
        };
        let per_page = match params.get("per_page") {
            None => 50,
            Some(p) => p
                .parse::<usize>()
                .ok()
                .filter(|p| PER_PAGE.contains(p))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "`per_page` must be one of 25, 50, 100, 200, got {p:?}"
                    ))
                })?,
        };
        let status = match params.get("status") {
            None => None,
            Some(s) => Some(AgentStatus::parse(s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`status` must be one of online, offline, pending, revoked, unknown, got {s:?}"
                ))
            })?),
        };
        let sort = match params.get("sort") {
            None => "hostname",
            Some(s) => SORT_KEYS.into_iter().find(|k| k == s).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`sort` must be one of {}, got {s:?}",
                    SORT_KEYS.join(", ")
                ))
            })?,
        };
        let desc = match params.get("order").map(String::as_str) {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(o) => {
                return Err(ApiError::BadRequest(format!(
                    "`order` must be asc or desc, got {o:?}"
                )))
            }
        };
        Ok(ListQuery {
            page,
            per_page,
            q: params
                .get("q")
                .map(|q| q.trim().to_lowercase())
                .filter(|q| !q.is_empty()),
            status,
            os: params.get("os").cloned().filter(|o| !o.is_empty()),
            sort,
            desc,
        })
    }
}

/// Filters, sorts (nulls last in both orders, ties by id) and pages the host list.
///
/// Built for 100,000 hosts under [`Fleet::with_hosts`]'s read lock: filters and sort keys
/// work on the records in place (a host name is lowercased at most once per request, not
/// once per comparison), only the requested page is sorted in full (a selection finds it
/// first), and summaries are built for that page alone.
///
/// `alerts` (firing alerts per host) is counted by the caller before it takes the hosts'
/// lock: no other lock is taken while that one is held.
pub fn list_agents(
    fleet: &Fleet,
    hosts: &[&HostRecord],
    alerts: &HashMap<String, usize>,
    q: &ListQuery,
    now: u64,
) -> AgentPage {
    // One searcher per request, not one per host.
    let needle = q.q.as_deref().map(Needle::new);
    let mut rows: Vec<(Option<SortKey<'_>>, &HostRecord)> = hosts
        .iter()
        .copied()
        .filter(|h| matches_query(h, q.status, q.os.as_ref(), needle.as_ref()))
        .map(|h| (SortKey::of(h, q.sort), h))
        .collect();
    let total = rows.len();
    let order = |a: &(Option<SortKey<'_>>, &HostRecord), b: &(Option<SortKey<'_>>, &HostRecord)| {
        nulls_last(a.0.as_ref(), b.0.as_ref(), q.desc).then_with(|| a.1.id.cmp(&b.1.id))
    };
    let skip = (q.page - 1).saturating_mul(q.per_page);
    let end = skip.saturating_add(q.per_page);
    if end < rows.len() {
        // Only the first `end` rows matter: move them to the front, drop the rest.
        rows.select_nth_unstable_by(end, order);
        rows.truncate(end);
    }
    rows.sort_unstable_by(order);
    let items = rows
        .iter()
        .skip(skip)
        .map(|(_, h)| fleet.summary_counted(h, now, alerts.get(&h.id).copied().unwrap_or(0)))
        .collect();
    AgentPage {
        items,
        total,
        page: q.page,
        per_page: q.per_page,
    }
}

/// The host list's `status`, `os` and `q` filters; bulk commands select hosts with the
/// same rule, so a bulk command reaches exactly the hosts the list shows.
fn matches_query(
    h: &HostRecord,
    status: Option<AgentStatus>,
    os: Option<&String>,
    needle: Option<&Needle<'_>>,
) -> bool {
    status.is_none_or(|s| h.status == s)
        && os.is_none_or(|os| h.os.as_ref() == Some(os))
        && needle.is_none_or(|needle| {
            // The display name is the host name today (`Fleet::summary_counted`).
            h.hostname
                .as_deref()
                .is_some_and(|name| needle.in_lowercase_of(name))
                || h.ips
                    .iter()
                    .any(|ip| needle.finder.find(ip.as_bytes()).is_some())
        })
}

/// A search term of the host list (already lowercase, see [`ListQuery::parse`]).
struct Needle<'a> {
    text: &'a str,
    finder: memchr::memmem::Finder<'a>,
}

impl<'a> Needle<'a> {
    fn new(text: &'a str) -> Needle<'a> {
        Needle {
            text,
            finder: memchr::memmem::Finder::new(text),
        }
    }

    /// Whether `haystack`, lowercased, contains the term, without allocating for the
    /// usual ASCII host name.
    fn in_lowercase_of(&self, haystack: &str) -> bool {
        let bytes = haystack.as_bytes();
        if !haystack.is_ascii() {
            haystack.to_lowercase().contains(self.text)
        } else if !bytes.iter().any(u8::is_ascii_uppercase) {
            self.finder.find(bytes).is_some()
        } else {
            self.text.is_empty()
                || bytes
                    .windows(self.text.len())
                    .any(|w| w.eq_ignore_ascii_case(self.text.as_bytes()))
        }
    }
}

/// A host's value for one sort key of the host list; `None` sorts last in both orders.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum SortKey<'a> {
    Text(Cow<'a, str>),
    Number(u64),
}

impl<'a> SortKey<'a> {
    fn of(h: &'a HostRecord, key: &str) -> Option<SortKey<'a>> {
        let text = |s: &'a Option<String>| {
            s.as_deref().map(|s| {
                SortKey::Text(
                    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
                        Cow::Borrowed(s)
                    } else {
                        Cow::Owned(s.to_lowercase())
                    },
                )
            })
        };
        let vital = |f: fn(&edgefleet_codec::Vitals) -> u8| {
            h.vitals.as_ref().map(|v| SortKey::Number(f(v).into()))
        };
        match key {
            "hostname" => text(&h.hostname),
            "os" => text(&h.os),
            "cpu" => vital(|v| v.cpu_pct),
            "mem" => vital(|v| v.mem_pct),
            "disk" => vital(|v| v.disk_pct),
            "last_seen" => h.last_seen.map(SortKey::Number),
            _ => Some(SortKey::Text(Cow::Borrowed(h.status.as_str()))),
        }
    }
}

fn nulls_last<T: Ord>(a: Option<T>, b: Option<T>, desc: bool) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => {
            if desc {
                b.cmp(&a)
            } else {
                a.cmp(&b)
            }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

async fn list(
    State(fleet): State<Arc<Fleet>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<AgentPage>, ApiError> {
    let q = ListQuery::parse(&params)?;
    let filter = scoped::HostFilter::parse(&fleet, params.get("group"), params.get("label"))?;
    let now = now_ms();
    let alerts = fleet.alerts.firing_counts();
    Ok(Json(fleet.with_hosts(|hosts| {
        list_agents(&fleet, &filter.apply(hosts), &alerts, &q, now)
    })))
}

fn find(fleet: &Fleet, id: &str) -> Result<HostRecord, ApiError> {
    if parse_id(id).is_none() {
        return Err(ApiError::NotFound(format!(
            "no agent {:?}: agent ids are 16 characters of a-z and 2-7",
            id.chars().take(40).collect::<String>()
        )));
    }
    fleet
        .host(id)
        .ok_or_else(|| ApiError::NotFound(format!("no agent {id}")))
}

async fn detail(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
) -> Result<Json<api::AgentDetail>, ApiError> {
    let host = find(&fleet, &id)?;
    let store = fleet.store.clone();
    let hid = host.id.clone();
    let history = tokio::task::spawn_blocking(move || store.transitions(&hid, 100))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let now = now_ms();
    let fingerprint = {
        let bytes: Vec<u8> = (0..32)
            .filter_map(|i| u8::from_str_radix(host.public_key.get(i * 2..i * 2 + 2)?, 16).ok())
            .collect();
        let key: [u8; 32] = bytes.try_into().unwrap_or([0; 32]);
        edgefleet_codec::PublicKey::from_bytes(key)
            .fingerprint()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let labels = host.labels();
    let groups = fleet
        .groups
        .of(&host.id, &labels)
        .into_iter()
        .map(|g| g.id)
        .collect();
    Ok(Json(api::AgentDetail {
        label_sources: api::LabelsView {
            labels,
            agent: host.agent_labels.clone(),
            operator: host.operator_labels.clone(),
        },
        groups,
        settings: host.settings.clone(),
        effective: Some(fleet.effective_settings(&host)),
        summary: fleet.summary_of(&host, now),
        key_fingerprint: fingerprint,
        kernel: host.kernel.clone(),
        arch: host.arch.clone(),
        agent_version: host.agent_version.clone(),
        boot_time: host.boot_time,
        heartbeat_interval_s: host.heartbeat_interval_s,
        first_seen: host.first_seen,
        status_since: host.status_since,
        vitals: host.vitals.map(|v| api::Vitals {
            cpu: v.cpu_pct,
            mem: v.mem_pct,
            disk: v.disk_pct,
            load: f32::from(v.load_centi) / 100.0,
            uptime_s: host
                .boot_time
                .map(|b| (now / 1000).saturating_sub(b))
                .unwrap_or(v.uptime_s),
            rx_bps: v.rx_bps,
            tx_bps: v.tx_bps,
        }),
        apps: host
            .apps
            .iter()
            .map(|a| api::AppView {
                id: a.id.clone(),
                status: a.status.as_str().to_string(),
                version: a.version.clone(),
            })
            .collect(),
        status_history: history,
    }))
}

async fn series(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<api::MetricSeries>, ApiError> {
    let host = find(&fleet, &id)?;
    let range = params.get("range").map(String::as_str).unwrap_or("1h");
    let (span_ms, tier) = match range {
        "1h" => (3_600_000, Tier::Raw),
        "6h" => (6 * 3_600_000, Tier::Raw),
        "24h" => (24 * 3_600_000, Tier::OneMinute),
        "7d" => (7 * 86_400_000, Tier::FifteenMinutes),
        "30d" => (30 * 86_400_000, Tier::FifteenMinutes),
        other => {
            return Err(ApiError::BadRequest(format!(
                "`range` must be one of 1h, 6h, 24h, 7d, 30d, got {other:?}"
            )))
        }
    };
    let now = now_ms();
    let from = now.saturating_sub(span_ms);
    let store = fleet.store.clone();
    let samples = tokio::task::spawn_blocking(move || store.samples(&host.id, tier, from, now + 1))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(api::MetricSeries {
        range: range.to_string(),
        resolution: tier.name().to_string(),
        points: downsample(&samples, from, span_ms, MAX_POINTS),
    }))
}

/// Merges samples into at most `max` equal time slots over `[from, from + span)`.
pub fn downsample(
    samples: &[(u64, Sample)],
    from: u64,
    span: u64,
    max: usize,
) -> Vec<api::MetricPoint> {
    let slot = span.div_ceil(max as u64).max(1);
    let mut slots: BTreeMap<u64, Sample> = BTreeMap::new();
    for (at, s) in samples {
        let key = from + (at.saturating_sub(from) / slot) * slot;
        let e = slots.entry(key).or_default();
        e.count += s.count;
        e.cpu_sum += s.cpu_sum;
        e.mem_sum += s.mem_sum;
        e.disk_sum += s.disk_sum;
        e.rx_sum += s.rx_sum;
        e.tx_sum += s.tx_sum;
    }
    slots
        .into_iter()
        .map(|(at, s)| api::MetricPoint {
            at,
            cpu: Sample::avg(s.cpu_sum, s.count),
            mem: Sample::avg(s.mem_sum, s.count),
            disk: Sample::avg(s.disk_sum, s.count),
            rx_bps: Sample::avg_rate(s.rx_sum, s.count),
            tx_bps: Sample::avg_rate(s.tx_sum, s.count),
        })
        .collect()
}

async fn events(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Vec<crate::store::EventRecord>>, ApiError> {
    let host = find(&fleet, &id)?;
    let after = match params.get("after") {
        None => 0,
        Some(a) => a
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest(format!("`after` must be an event id, got {a:?}")))?,
    };
    let store = fleet.store.clone();
    let list = tokio::task::spawn_blocking(move || store.events(&host.id, after, 1000))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(list))
}

async fn results(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<crate::store::ResultRecord>>, ApiError> {
    let host = find(&fleet, &id)?;
    let store = fleet.store.clone();
    let list = tokio::task::spawn_blocking(move || store.results(&host.id, 1000))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(list))
}

/// `firing_alerts` (hosts with a firing alert) is counted by the caller before it takes
/// the hosts' lock.
pub fn fleet_summary(
    fleet: &Fleet,
    hosts: &[&HostRecord],
    firing_alerts: usize,
    now: u64,
) -> FleetSummary {
    // One pass: at 100,000 hosts each pass over the records costs milliseconds.
    let (mut online, mut offline, mut pending, mut stale) = (0, 0, 0, 0);
    let mut hotspots = api::Hotspots {
        cpu: 0,
        mem: 0,
        disk: 0,
    };
    let mut os: BTreeMap<&str, usize> = BTreeMap::new();
    for h in hosts {
        match h.status {
            AgentStatus::Online => {
                online += 1;
                if let Some(v) = &h.vitals {
                    hotspots.cpu += usize::from(v.cpu_pct >= 80);
                    hotspots.mem += usize::from(v.mem_pct >= 80);
                    hotspots.disk += usize::from(v.disk_pct >= 80);
                }
            }
            AgentStatus::Offline => offline += 1,
            AgentStatus::Pending => pending += 1,
            AgentStatus::Revoked | AgentStatus::Unknown => {}
        }
        stale += usize::from(h.is_stale(&fleet.timings, now));
        *os.entry(h.os.as_deref().unwrap_or("unknown")).or_default() += 1;
    }
    let mut os: Vec<api::OsCount> = os
        .into_iter()
        .map(|(os, count)| api::OsCount {
            os: os.to_string(),
            count,
        })
        .collect();
    os.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.os.cmp(&b.os)));
    FleetSummary {
        total: hosts.len(),
        online,
        offline,
        percent_online: if hosts.is_empty() {
            0.0
        } else {
            (online as f32 * 1000.0 / hosts.len() as f32).round() / 10.0
        },
        stale,
        pending,
        firing_alerts,
        hotspots,
        os,
    }
}

async fn summary(
    State(fleet): State<Arc<Fleet>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<FleetSummary>, ApiError> {
    only_params(&params, &["group", "label"])?;
    let filter = scoped::HostFilter::parse(&fleet, params.get("group"), params.get("label"))?;
    let now = now_ms();
    let firing = fleet.alerts.firing_hosts();
    Ok(Json(fleet.with_hosts(|hosts| {
        fleet_summary(&fleet, &filter.apply(hosts), firing, now)
    })))
}
