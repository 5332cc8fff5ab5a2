//! Routes for staged rollouts.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use edgefleet_codec::api::{self, AgentStatus};
use edgefleet_codec::CommandAction;

use super::scoped::HostFilter;
use super::{blocking, build_action, find, json_body, require, ApiError};
use crate::auth::{KeyRecord, Role};
use crate::fleet::{now_ms, Fleet};
use crate::presence::Approval;
use crate::rollouts::{check_plan, Control, Rollout, MAX_HOSTS};

/// The fields of a `POST /api/rollouts` body.
const FIELDS: [&str; 17] = [
    "name",
    "action",
    "app",
    "expires",
    "url",
    "version",
    "sha256",
    "values",
    "group",
    "selector",
    "agents",
    "canary",
    "waves",
    "soak",
    "max_failure_pct",
    "min_executed",
    "rate_per_minute",
];

pub fn routes() -> Router<Arc<Fleet>> {
    Router::new()
        .route("/api/rollouts", get(list).post(create))
        .route("/api/rollouts/:id", get(one))
        .route("/api/rollouts/:id/pause", post(pause))
        .route("/api/rollouts/:id/resume", post(resume))
        .route("/api/rollouts/:id/abort", post(abort))
}

async fn list(State(fleet): State<Arc<Fleet>>) -> Json<Vec<api::RolloutView>> {
    Json(fleet.rollouts.list())
}

async fn one(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
) -> Result<Json<api::RolloutView>, ApiError> {
    fleet
        .rollouts
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no rollout {id:?}")))
}

async fn create(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<api::RolloutView>), ApiError> {
    require(&key, Role::Operator)?;
    // `RolloutCreate` flattens the command fields, so serde cannot refuse unknown ones:
    // a misspelt `canry` must not silently become the default canary.
    let fields: serde_json::Map<String, serde_json::Value> = json_body(&body)?;
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "unknown field `{unknown}`, expected one of {}",
            FIELDS.join(", ")
        )));
    }
    let req: api::RolloutCreate = json_body(&body)?;
    if req.action != "update-app" && req.action != "push-config" {
        return Err(ApiError::BadRequest(format!(
            "action must be update-app or push-config, got {:?}",
            req.action
        )));
    }
    let plan = check_plan(&req).map_err(ApiError::BadRequest)?;
    let action = build_action(&req.action, req.request.clone())?;
    let app = match &action {
        CommandAction::UpdateApp { app, .. } | CommandAction::PushConfig { app, .. } => app.clone(),
        _ => unreachable!("build_action returns the action it was asked for"),
    };
    let hosts = match (&req.group, &req.selector, &req.agents) {
        (Some(_), None, None) | (None, Some(_), None) => {
            let filter = HostFilter::parse(&fleet, req.group.as_ref(), req.selector.as_ref())?;
            let mut hosts = filter.apply(fleet.snapshot());
            hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname).then_with(|| a.id.cmp(&b.id)));
            hosts
        }
        (None, None, Some(list)) => {
            let mut seen = std::collections::HashSet::new();
            let mut hosts = Vec::new();
            for id in list {
                let h = find(&fleet, id)?;
                if seen.insert(h.id.clone()) {
                    hosts.push(h);
                }
            }
            hosts
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one target: group, selector or agents".into(),
            ))
        }
    };
    let hosts: Vec<_> = hosts
        .into_iter()
        .filter(|h| h.approval == Approval::Active && h.status != AgentStatus::Revoked)
        .collect();
    if hosts.is_empty() {
        return Err(ApiError::BadRequest(
            "the target has no active hosts".into(),
        ));
    }
    if hosts.len() > MAX_HOSTS {
        return Err(ApiError::BadRequest(format!(
            "a rollout targets at most {MAX_HOSTS} hosts"
        )));
    }
    let lacking: Vec<&str> = hosts
        .iter()
        .filter(|h| !h.apps.is_empty() && !h.apps.iter().any(|a| a.id == app))
        .map(|h| h.hostname.as_deref().unwrap_or(&h.id))
        .collect();
    if !lacking.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "{} target hosts do not report app {app:?}: {}{}",
            lacking.len(),
            lacking
                .iter()
                .take(5)
                .copied()
                .collect::<Vec<_>>()
                .join(", "),
            if lacking.len() > 5 { ", ..." } else { "" }
        )));
    }
    let mut raw = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let id = format!("ro-{}", crate::commands::hex(&raw));
    let name = req.name.clone().filter(|n| !n.trim().is_empty());
    let targets = hosts.into_iter().map(|h| (h.id, h.hostname)).collect();
    let rollout = Rollout::new(id, name, action, plan, targets, &key.name, now_ms());
    blocking(move || {
        let view = fleet.create_rollout(rollout)?;
        Ok((StatusCode::CREATED, Json(view)))
    })
    .await
}

async fn control(
    fleet: Arc<Fleet>,
    key: KeyRecord,
    id: String,
    control: Control,
) -> Result<Json<api::RolloutView>, ApiError> {
    require(&key, Role::Operator)?;
    if fleet.rollouts.get(&id).is_none() {
        return Err(ApiError::NotFound(format!("no rollout {id:?}")));
    }
    blocking(move || Ok(Json(fleet.control_rollout(&id, control, &key.name)?))).await
}

async fn pause(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
) -> Result<Json<api::RolloutView>, ApiError> {
    control(fleet, key, id, Control::Pause).await
}

async fn resume(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
) -> Result<Json<api::RolloutView>, ApiError> {
    control(fleet, key, id, Control::Resume).await
}

async fn abort(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
) -> Result<Json<api::RolloutView>, ApiError> {
    control(fleet, key, id, Control::Abort).await
}
