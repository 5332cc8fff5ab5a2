//! Host groups: the list (kind, members or selector, agents, scoped settings), a form to
//! create or edit one (static: member ids; dynamic: a label selector), delete, the host
//! list filtered by a group, and maintenance for all of a group's hosts at once.

use edgefleet_codec::api::{GroupSpec, GroupView, MaintenanceRequest, ScopedSettings};
use leptos::prelude::*;

use super::{button, confirm, text_field, ErrorBox, MaintenanceForm, Remote};
use crate::api::{self, ApiError};
use crate::format;
use crate::query::encode;
use crate::route::Link;

/// The group form's fields, as typed.
#[derive(Debug, Clone, Copy)]
struct Form {
    /// `Some(id)` while editing that group; `None` for a new one.
    editing: RwSignal<Option<String>>,
    id: RwSignal<String>,
    name: RwSignal<String>,
    description: RwSignal<String>,
    dynamic: RwSignal<bool>,
    members: RwSignal<String>,
    selector: RwSignal<String>,
    priority: RwSignal<String>,
    heartbeat: RwSignal<String>,
    grace: RwSignal<String>,
    threshold: RwSignal<String>,
    window: RwSignal<String>,
}

impl Form {
    fn new() -> Form {
        Form {
            editing: RwSignal::new(None),
            id: RwSignal::new(String::new()),
            name: RwSignal::new(String::new()),
            description: RwSignal::new(String::new()),
            dynamic: RwSignal::new(false),
            members: RwSignal::new(String::new()),
            selector: RwSignal::new(String::new()),
            priority: RwSignal::new(String::new()),
            heartbeat: RwSignal::new(String::new()),
            grace: RwSignal::new(String::new()),
            threshold: RwSignal::new(String::new()),
            window: RwSignal::new(String::new()),
        }
    }

    fn fill(&self, g: Option<&GroupView>) {
        let text = |v: Option<String>| v.unwrap_or_default();
        let num = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        self.editing.set(g.map(|g| g.id.clone()));
        self.id.set(text(g.map(|g| g.id.clone())));
        self.name.set(text(g.map(|g| g.name.clone())));
        self.description
            .set(text(g.and_then(|g| g.description.clone())));
        self.dynamic.set(g.is_some_and(|g| g.kind == "dynamic"));
        self.members.set(text(
            g.and_then(|g| g.members.clone()).map(|m| m.join("\n")),
        ));
        self.selector.set(text(g.and_then(|g| g.selector.clone())));
        self.priority
            .set(g.map(|g| g.priority.to_string()).unwrap_or_default());
        let s = g.map(|g| g.settings.clone()).unwrap_or_default();
        self.heartbeat
            .set(num(s.heartbeat_interval_s.map(u64::from)));
        self.grace.set(num(s.offline_grace_s));
        self.threshold.set(num(s.hotspot_threshold.map(u64::from)));
        self.window.set(num(s.hotspot_window_s));
    }

    /// The spec to send, or what is wrong with a field.
    fn spec(&self) -> Result<GroupSpec, String> {
        fn number<T: std::str::FromStr>(what: &str, text: &str) -> Result<Option<T>, String> {
            let t = text.trim();
            if t.is_empty() {
                return Ok(None);
            }
            t.parse()
                .map(Some)
                .map_err(|_| format!("{what} must be a whole number, not {t:?}"))
        }
        let trimmed = |s: RwSignal<String>| {
            let t = s.get_untracked().trim().to_string();
            (!t.is_empty()).then_some(t)
        };
        let (members, selector) = if self.dynamic.get_untracked() {
            (
                None,
                Some(trimmed(self.selector).ok_or("A dynamic group needs a selector.")?),
            )
        } else {
            let ids: Vec<String> = self
                .members
                .get_untracked()
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            (Some(ids), None)
        };
        Ok(GroupSpec {
            id: self.id.get_untracked().trim().to_string(),
            name: trimmed(self.name),
            description: trimmed(self.description),
            members,
            selector,
            settings: ScopedSettings {
                heartbeat_interval_s: number(
                    "Heartbeat interval",
                    &self.heartbeat.get_untracked(),
                )?,
                offline_grace_s: number("Offline grace", &self.grace.get_untracked())?,
                hotspot_threshold: number("Hotspot threshold", &self.threshold.get_untracked())?,
                hotspot_window_s: number("Hotspot window", &self.window.get_untracked())?,
            },
            priority: number("Priority", &self.priority.get_untracked())?.unwrap_or(0),
        })
    }
}

/// Scoped settings in a few words: `heartbeat 30 s, grace 60 s`, or an en dash.
fn settings_text(s: &ScopedSettings) -> String {
    let mut parts = Vec::new();
    if let Some(v) = s.heartbeat_interval_s {
        parts.push(format!("heartbeat {v} s"));
    }
    if let Some(v) = s.offline_grace_s {
        parts.push(format!("offline grace {v} s"));
    }
    if let Some(v) = s.hotspot_threshold {
        parts.push(format!("hotspot ≥ {v} %"));
    }
    if let Some(v) = s.hotspot_window_s {
        parts.push(format!("hotspot window {v} s"));
    }
    if parts.is_empty() {
        "–".into()
    } else {
        parts.join(", ")
    }
}

#[component]
pub fn GroupsPage() -> impl IntoView {
    let groups = Remote::<Vec<GroupView>>::new();
    let reload = move || groups.load("/api/groups".into());
    reload();
    let form = Form::new();
    let show_form = RwSignal::new(false);
    let error = RwSignal::new(None::<ApiError>);
    let notice = RwSignal::new(None::<String>);
    // The group whose maintenance form is open.
    let maint_for = RwSignal::new(None::<String>);

    let done = move |text: String| {
        notice.set(Some(text));
        error.set(None);
        reload();
    };
    let failed = move |e: ApiError| {
        notice.set(None);
        error.set(Some(e));
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let spec = match form.spec() {
            Ok(s) => s,
            Err(message) => return failed(ApiError { status: 0, message }),
        };
        let editing = form.editing.get_untracked();
        // The answer is the group; the list is reloaded with its host count anyway, so it
        // is not parsed (every parsed type costs wasm size).
        leptos::task::spawn_local(async move {
            let result = match &editing {
                Some(id) => {
                    let path = format!("/api/groups/{}", encode(id));
                    api::put::<serde::de::IgnoredAny>(&path, &spec).await
                }
                None => api::post::<serde::de::IgnoredAny>("/api/groups", &spec).await,
            };
            match result {
                Ok(_) => {
                    show_form.set(false);
                    let verb = if editing.is_some() {
                        "saved"
                    } else {
                        "created"
                    };
                    done(format!("Group {} {verb}.", spec.id));
                }
                Err(e) => failed(e),
            }
        });
    };
    let delete = move |id: String| {
        if !confirm(&format!(
            "Delete the group {id}? Its hosts stay; they lose its settings."
        )) {
            return;
        }
        leptos::task::spawn_local(async move {
            match api::delete(&format!("/api/groups/{}", encode(&id))).await {
                Ok(()) => done(format!("Group {id} deleted.")),
                Err(e) => failed(e),
            }
        });
    };
    let start_maintenance = Callback::new(move |req: MaintenanceRequest| {
        let Some(id) = maint_for.get_untracked() else {
            return;
        };
        leptos::task::spawn_local(async move {
            let path = format!("/api/groups/{}/maintenance", encode(&id));
            // The answer counts the hosts; the message says it without parsing one more type.
            match api::post::<serde::de::IgnoredAny>(&path, &req).await {
                Ok(_) => {
                    maint_for.set(None);
                    done(format!("The hosts of {id} are in maintenance."));
                }
                Err(e) => failed(e),
            }
        });
    });
    let end_maintenance = move |id: String| {
        leptos::task::spawn_local(async move {
            match api::delete(&format!("/api/groups/{}/maintenance", encode(&id))).await {
                Ok(()) => done(format!("Maintenance of {id} ended.")),
                Err(e) => failed(e),
            }
        });
    };

    view! {
        <h1>"Groups"</h1>
        <section class="panel">
            <div class="toolbar">
                {button("New group", "primary", Some("new-group"), Callback::new(move |()| {
                    form.fill(None);
                    show_form.set(true);
                }))}
                <span class="muted small">
                    "Static groups list their hosts; dynamic ones take every host whose labels match a selector."
                </span>
            </div>
            {move || notice.get().map(|n| view! { <div class="notice" role="status" data-testid="groups-message">{n}</div> })}
            <ErrorBox error=error />
            {move || show_form.get().then(|| view! {
                <form class="group-form" data-testid="group-form" on:submit=submit>
                    <h2>{move || match form.editing.get() { Some(id) => format!("Edit group {id}"), None => "New group".into() }}</h2>
                    <div class="cmd-form">
                        <label>"Id"
                            <input required data-testid="group-id" placeholder="pumps-north" pattern="[a-z0-9_\\-]{1,64}"
                                disabled=move || form.editing.get().is_some()
                                prop:value=move || form.id.get() on:input=move |ev| form.id.set(event_target_value(&ev)) />
                        </label>
                        {text_field("Name", "group-name", form.name, "Pumps, north side", false)}
                        {text_field("Description", "group-description", form.description, "", false)}
                        {text_field("Priority", "group-priority", form.priority, "0 (lowest wins)", false)}
                    </div>
                    <div class="cmd-form">
                        <label class="inline"><input type="radio" name="kind" data-testid="kind-static"
                            prop:checked=move || !form.dynamic.get() on:change=move |_| form.dynamic.set(false) />"Static: these hosts"</label>
                        <label class="inline"><input type="radio" name="kind" data-testid="kind-dynamic"
                            prop:checked=move || form.dynamic.get() on:change=move |_| form.dynamic.set(true) />"Dynamic: hosts whose labels match"</label>
                    </div>
                    {move || if form.dynamic.get() {
                        view! {
                            <div class="block">{text_field("Label selector", "group-selector", form.selector, "site in (ferry-*), hw=pi4", true)}</div>
                        }.into_any()
                    } else {
                        view! {
                            <label class="block">"Host ids, separated by spaces, commas or lines"
                                <textarea rows="3" class="mono" data-testid="group-members"
                                    prop:value=move || form.members.get() on:input=move |ev| form.members.set(event_target_value(&ev))></textarea>
                            </label>
                        }.into_any()
                    }}
                    <fieldset>
                        <legend>"Settings for its hosts (empty: inherited)"</legend>
                        <div class="cmd-form">
                            {text_field("Heartbeat interval (s)", "group-heartbeat", form.heartbeat, "5-3600", false)}
                            {text_field("Offline grace (s)", "group-grace", form.grace, "", false)}
                            {text_field("Hotspot threshold (%)", "group-threshold", form.threshold, "1-100", false)}
                            {text_field("Hotspot window (s)", "group-window", form.window, "", false)}
                        </div>
                    </fieldset>
                    <p>
                        <button type="submit" class="primary" data-testid="save-group">"Save"</button>
                        " "
                        {button("Cancel", "", None, Callback::new(move |()| show_form.set(false)))}
                    </p>
                </form>
            })}
            <ErrorBox error=groups.error />
            {move || match groups.data.get() {
                None => view! { <div class="loading">"Loading groups…"</div> }.into_any(),
                Some(list) if list.is_empty() => view! { <p class="muted" data-testid="no-groups">"No groups yet."</p> }.into_any(),
                Some(list) => {
                    let now = api::now();
                    view! {
                        <div class="table-wrap">
                            <table data-testid="groups">
                                <thead><tr>
                                    <th>"Group"</th><th>"Kind"</th><th>"Members / selector"</th><th class="num">"Hosts"</th>
                                    <th>"Settings"</th><th class="num">"Priority"</th><th>"Updated"</th><th></th>
                                </tr></thead>
                                <tbody>
                                    {list.into_iter().map(|g| {
                                        let who = match (&g.selector, &g.members) {
                                            (Some(sel), _) => view! { <code>{sel.clone()}</code> }.into_any(),
                                            (None, Some(m)) => view! { <span>{format!("{} listed", m.len())}</span> }.into_any(),
                                            (None, None) => view! { <span>"–"</span> }.into_any(),
                                        };
                                        let (id1, id2, id3, id4, id5) = (g.id.clone(), g.id.clone(), g.id.clone(), g.id.clone(), g.id.clone());
                                        let g2 = g.clone();
                                        view! {
                                            <tr data-testid="group-row" data-id=g.id.clone()>
                                                <td>
                                                    <strong>{g.name.clone()}</strong>
                                                    <div class="muted small mono">{g.id.clone()}</div>
                                                    {g.description.clone().map(|d| view! { <div class="muted small">{d}</div> })}
                                                </td>
                                                <td><span class="badge">{g.kind.clone()}</span></td>
                                                <td>{who}</td>
                                                <td class="num">
                                                    <Link href=format!("/?group={}", encode(&g.id))>
                                                        <span data-testid="group-agents">{g.agents}</span>
                                                    </Link>
                                                </td>
                                                <td class="small">{settings_text(&g.settings)}</td>
                                                <td class="num">{g.priority}</td>
                                                <td title=format::timestamp(g.updated_at)>{format::ago(now, Some(g.updated_at))}</td>
                                                <td class="actions">
                                                    <Link href=format!("/?group={}", encode(&id1)) class="button".to_string()>"Hosts"</Link>
                                                    {button("Edit", "", None, Callback::new(move |()| { form.fill(Some(&g2)); show_form.set(true); }))}
                                                    {button("Maintenance…", "", Some("group-maintenance"), Callback::new(move |()| maint_for.set(Some(id2.clone()))))}
                                                    {button("End maintenance", "", None, Callback::new(move |()| end_maintenance(id3.clone())))}
                                                    {button("Delete", "danger", None, Callback::new(move |()| delete(id4.clone())))}
                                                </td>
                                            </tr>
                                            {move || (maint_for.get().as_deref() == Some(id5.as_str())).then(|| view! {
                                                <tr><td colspan="8">
                                                    <MaintenanceForm on_submit=start_maintenance on_cancel=Callback::new(move |()| maint_for.set(None))
                                                        busy=Signal::stored(false) submit_label="Put all its hosts in maintenance" />
                                                </td></tr>
                                            })}
                                        }
                                    }.into_any()).collect_view()}
                                </tbody>
                            </table>
                        </div>
                    }.into_any()
                }
            }}
        </section>
    }
}
