//! Routes for labels, per-agent settings, maintenance and groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use edgefleet_codec::api::{self, AgentPage};

use super::{blocking, find, json_body, list_agents, require, ApiError, ListQuery};
use crate::auth::{KeyRecord, Role};
use crate::fleet::{now_ms, Fleet};
use crate::groups::{Group, Membership};
use crate::labels::Selector;
use crate::presence::HostRecord;

pub fn routes() -> Router<Arc<Fleet>> {
    Router::new()
        .route("/api/labels", get(label_values))
        .route("/api/agents/:id/labels", put(set_labels))
        .route("/api/agents/:id/settings", put(set_settings))
        .route(
            "/api/agents/:id/maintenance",
            post(maintenance_on).delete(maintenance_off),
        )
        .route("/api/groups", get(list_groups).post(create_group))
        .route(
            "/api/groups/:id",
            get(get_group).put(replace_group).delete(delete_group),
        )
        .route("/api/groups/:id/agents", get(group_agents))
        .route(
            "/api/groups/:id/maintenance",
            post(group_maintenance_on).delete(group_maintenance_off),
        )
}

/// The `group=` and `label=` filters of the host list, the summary and bulk commands.
#[derive(Debug, Default)]
pub struct HostFilter {
    group: Option<Arc<Membership>>,
    label: Option<Selector>,
}

impl HostFilter {
    pub fn parse(
        fleet: &Fleet,
        group: Option<&String>,
        label: Option<&String>,
    ) -> Result<HostFilter, ApiError> {
        let group = match group.map(|g| g.trim()).filter(|g| !g.is_empty()) {
            None => None,
            Some(g) => Some(
                fleet
                    .groups
                    .matcher(g)
                    .ok_or_else(|| ApiError::NotFound(format!("no group {g:?}")))?,
            ),
        };
        let label = match label.map(|l| l.trim()).filter(|l| !l.is_empty()) {
            None => None,
            Some(l) => {
                Some(Selector::parse(l).map_err(|e| ApiError::BadRequest(format!("label: {e}")))?)
            }
        };
        Ok(HostFilter { group, label })
    }

    pub fn is_empty(&self) -> bool {
        self.group.is_none() && self.label.is_none()
    }

    pub fn matches(&self, h: &HostRecord) -> bool {
        if self.is_empty() {
            return true;
        }
        let labels = h.labels();
        self.group
            .as_ref()
            .is_none_or(|g| g.contains(&h.id, &labels))
            && self.label.as_ref().is_none_or(|s| s.matches(&labels))
    }

    /// The hosts that match, owned or borrowed ([`Fleet::with_hosts`]).
    pub fn apply<H: std::borrow::Borrow<HostRecord>>(&self, hosts: Vec<H>) -> Vec<H> {
        if self.is_empty() {
            return hosts;
        }
        hosts
            .into_iter()
            .filter(|h| self.matches(h.borrow()))
            .collect()
    }
}

async fn label_values(State(fleet): State<Arc<Fleet>>) -> Json<BTreeMap<String, Vec<String>>> {
    Json(fleet.label_values())
}

async fn set_labels(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<api::LabelsView>, ApiError> {
    require(&key, Role::Operator)?;
    let update: api::LabelsUpdate = json_body(&body)?;
    find(&fleet, &id)?;
    for (k, v) in &update.set {
        crate::labels::check_key(k).map_err(ApiError::BadRequest)?;
        crate::labels::check_value(k, v).map_err(ApiError::BadRequest)?;
    }
    for k in &update.remove {
        crate::labels::check_key(k).map_err(ApiError::BadRequest)?;
    }
    if update.set.is_empty() && update.remove.is_empty() {
        return Err(ApiError::BadRequest(
            "give labels to `set` or to `remove`".into(),
        ));
    }
    blocking(move || Ok(Json(fleet.set_labels(&id, update, &key.name)?))).await
}

async fn set_settings(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<api::EffectiveSettings>, ApiError> {
    require(&key, Role::Operator)?;
    let settings: api::ScopedSettings = json_body(&body)?;
    crate::groups::check_agent_settings(&settings).map_err(ApiError::BadRequest)?;
    find(&fleet, &id)?;
    blocking(move || Ok(Json(fleet.set_agent_settings(&id, settings, &key.name)?))).await
}

fn maintenance_request(body: &[u8], actor: &str) -> Result<api::MaintenanceView, ApiError> {
    let req: api::MaintenanceRequest = json_body(body)?;
    crate::maintenance::from_request(req, actor, now_ms()).map_err(ApiError::BadRequest)
}

async fn maintenance_on(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<api::MaintenanceView>, ApiError> {
    require(&key, Role::Operator)?;
    let m = maintenance_request(&body, &key.name)?;
    find(&fleet, &id)?;
    blocking(move || Ok(Json(fleet.maintenance_on(&id, m, &key.name)?))).await
}

async fn maintenance_off(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&key, Role::Operator)?;
    find(&fleet, &id)?;
    blocking(move || {
        if fleet.maintenance_off(&id, &key.name, "ended by an operator")? {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::Conflict(format!(
                "agent {id} is not in maintenance"
            )))
        }
    })
    .await
}

/// The hosts of a group now.
fn members(fleet: &Fleet, group: &str) -> Result<Vec<HostRecord>, ApiError> {
    let filter = HostFilter::parse(fleet, Some(&group.to_string()), None)?;
    Ok(filter.apply(fleet.snapshot()))
}

fn group_view(fleet: &Fleet, g: Group, hosts: &[HostRecord]) -> api::GroupView {
    let m = fleet
        .groups
        .matcher(&g.id)
        .unwrap_or_else(|| Arc::new(Membership::Static(Default::default())));
    api::GroupView {
        agents: hosts
            .iter()
            .filter(|h| m.contains(&h.id, &h.labels()))
            .count(),
        kind: g.kind().to_string(),
        id: g.id,
        name: g.name,
        description: g.description,
        members: g.members,
        selector: g.selector,
        settings: g.settings,
        priority: g.priority,
        created_at: g.created_at,
        updated_at: g.updated_at,
    }
}

async fn list_groups(State(fleet): State<Arc<Fleet>>) -> Json<Vec<api::GroupView>> {
    let hosts = fleet.snapshot();
    Json(
        fleet
            .groups
            .list()
            .into_iter()
            .map(|g| group_view(&fleet, g, &hosts))
            .collect(),
    )
}

fn lookup(fleet: &Fleet, id: &str) -> Result<Group, ApiError> {
    fleet
        .groups
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("no group {id:?}")))
}

async fn get_group(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
) -> Result<Json<api::GroupView>, ApiError> {
    let g = lookup(&fleet, &id)?;
    Ok(Json(group_view(&fleet, g, &fleet.snapshot())))
}

/// Stores a group and re-applies settings to everyone it touched (before and after).
fn save_group(
    fleet: &Fleet,
    spec: api::GroupSpec,
    created_at: Option<u64>,
    actor: &str,
) -> Result<api::GroupView, ApiError> {
    let hosts = fleet.snapshot();
    let known: std::collections::HashSet<&str> = hosts.iter().map(|h| h.id.as_str()).collect();
    let group = crate::groups::validate(spec, now_ms(), created_at, |id| known.contains(id))
        .map_err(ApiError::BadRequest)?;
    let id = group.id.clone();
    let before = members(fleet, &id).unwrap_or_default();
    if !fleet.groups.put(group.clone())? {
        return Err(ApiError::Conflict(format!(
            "at most {} groups",
            crate::groups::MAX_GROUPS
        )));
    }
    let detail = format!(
        "{} {}: {}",
        if created_at.is_some() {
            "updated"
        } else {
            "created"
        },
        group.kind(),
        group
            .selector
            .clone()
            .unwrap_or_else(|| format!("{} members", group.members.as_ref().map_or(0, Vec::len)))
    );
    fleet.record_audit(actor, "group", Some(&id), &detail)?;
    let after = members(fleet, &id)?;
    let touched: Vec<String> = before.iter().chain(&after).map(|h| h.id.clone()).collect();
    fleet.apply_scoped(Some(&touched));
    Ok(group_view(fleet, group, &hosts))
}

async fn create_group(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<api::GroupView>), ApiError> {
    require(&key, Role::Operator)?;
    let spec: api::GroupSpec = json_body(&body)?;
    if fleet.groups.get(spec.id.trim()).is_some() {
        return Err(ApiError::Conflict(format!(
            "group {:?} exists; PUT /api/groups/{} replaces it",
            spec.id, spec.id
        )));
    }
    blocking(move || {
        let view = save_group(&fleet, spec, None, &key.name)?;
        Ok((StatusCode::CREATED, Json(view)))
    })
    .await
}

async fn replace_group(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<api::GroupView>, ApiError> {
    require(&key, Role::Operator)?;
    let mut spec: api::GroupSpec = json_body(&body)?;
    if !spec.id.is_empty() && spec.id != id {
        return Err(ApiError::BadRequest(format!(
            "id {:?} in the body differs from {id:?} in the path",
            spec.id
        )));
    }
    spec.id = id.clone();
    let existing = lookup(&fleet, &id)?;
    blocking(move || {
        Ok(Json(save_group(
            &fleet,
            spec,
            Some(existing.created_at),
            &key.name,
        )?))
    })
    .await
}

async fn delete_group(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&key, Role::Operator)?;
    lookup(&fleet, &id)?;
    blocking(move || {
        let before = members(&fleet, &id)?;
        fleet.groups.delete(&id)?;
        fleet.record_audit(&key.name, "group", Some(&id), "deleted")?;
        let touched: Vec<String> = before.into_iter().map(|h| h.id).collect();
        fleet.apply_scoped(Some(&touched));
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

async fn group_agents(
    State(fleet): State<Arc<Fleet>>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<AgentPage>, ApiError> {
    if params.contains_key("group") {
        return Err(ApiError::BadRequest(
            "`group` comes from the path here".into(),
        ));
    }
    let q = ListQuery::parse(&params)?;
    let filter = HostFilter::parse(&fleet, Some(&id), params.get("label"))?;
    let now = now_ms();
    let alerts = fleet.alerts.firing_counts();
    Ok(Json(fleet.with_hosts(|hosts| {
        list_agents(&fleet, &filter.apply(hosts), &alerts, &q, now)
    })))
}

#[derive(serde::Serialize)]
struct Affected {
    agents: usize,
}

async fn group_maintenance_on(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Affected>, ApiError> {
    require(&key, Role::Operator)?;
    let m = maintenance_request(&body, &key.name)?;
    lookup(&fleet, &id)?;
    blocking(move || {
        let hosts = members(&fleet, &id)?;
        for h in &hosts {
            fleet.maintenance_on(&h.id, m.clone(), &key.name)?;
        }
        Ok(Json(Affected {
            agents: hosts.len(),
        }))
    })
    .await
}

async fn group_maintenance_off(
    State(fleet): State<Arc<Fleet>>,
    Extension(key): Extension<KeyRecord>,
    Path(id): Path<String>,
) -> Result<Json<Affected>, ApiError> {
    require(&key, Role::Operator)?;
    lookup(&fleet, &id)?;
    blocking(move || {
        let mut ended = 0;
        for h in members(&fleet, &id)? {
            if fleet.maintenance_off(&h.id, &key.name, &format!("ended for group {id}"))? {
                ended += 1;
            }
        }
        Ok(Json(Affected { agents: ended }))
    })
    .await
}
