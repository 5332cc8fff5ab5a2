//! The hosts page: the fleet overview (cards, hotspots, OS breakdown), the pending
//! approval panel and the server-side paged, filtered, sorted host list. All state is in
//! the URL query; the data refreshes on live status events and every 30 s (10 s while the
//! live stream is down). A group and a label selector scope both the list and the
//! overview (the console's summary takes the same two filters).

use std::time::Duration;

use std::collections::BTreeMap;

use edgefleet_codec::api::{AgentPage, AgentStatus, AgentSummary, FleetSummary, GroupView};
use leptos::prelude::*;

use super::{button, ErrorBox, MaintenanceBadge, Pager, Remote, StatusBadge};
use crate::api;
use crate::format;
use crate::live::use_live;
use crate::query::{self, HostQuery, PAGE_SIZES};
use crate::route::{use_router, Link};

const PENDING_PATH: &str = "/api/agents?status=pending&per_page=25&sort=last_seen&order=desc";

#[component]
pub fn HostsPage() -> impl IntoView {
    let router = use_router();
    let live = use_live();
    let query = Memo::new(move |_| router.loc.with(|l| HostQuery::parse(&l.search)));
    let set_query = Callback::new(move |(q, replace): (HostQuery, bool)| {
        let path = router.loc.with_untracked(|l| l.path.clone());
        router.go(&format!("{path}{}", q.to_search()), replace);
    });
    let summary = Remote::<FleetSummary>::new();
    let list = Remote::<AgentPage>::new();
    let pending = Remote::<AgentPage>::new();
    let groups = Remote::<Vec<GroupView>>::new();
    let labels = Remote::<BTreeMap<String, Vec<String>>>::new();
    let last_refresh = RwSignal::new(0u64);
    let summary_path = Memo::new(move |_| query.get().summary_path());

    let refresh_side = move || {
        last_refresh.set(api::now());
        summary.load(summary_path.get_untracked());
        pending.load(PENDING_PATH.into());
    };
    // The list follows the URL state, and so does the overview when the scope changes.
    Effect::new(move |_| list.load(query.get().api_path()));
    Effect::new(move |prev: Option<String>| {
        let path = summary_path.get();
        if prev.is_some_and(|p| p != path) {
            summary.load(path.clone());
        }
        path
    });
    // What the filter bar offers changes rarely: read once per visit.
    groups.load("/api/groups".into());
    labels.load("/api/labels".into());
    // Presence and alert changes refresh everything (rows carry their firing-alert
    // counts), at most once a second: a large fleet can send many events at once (a site
    // losing its link).
    let scheduled = RwSignal::new(false);
    Effect::new(move |prev: Option<()>| {
        live.status.track();
        live.alerts.track();
        if prev.is_none() {
            refresh_side();
            return;
        }
        if scheduled.get_untracked() {
            return;
        }
        scheduled.set(true);
        set_timeout(
            move || {
                // The page may be gone by now.
                if scheduled.try_set(false).is_some() {
                    return;
                }
                refresh_side();
                list.load(query.get_untracked().api_path());
            },
            Duration::from_millis(1000),
        );
    });
    if let Ok(handle) = set_interval_with_handle(
        move || {
            let every = if live.connected.get_untracked() {
                30_000
            } else {
                10_000
            };
            if api::now().saturating_sub(last_refresh.get_untracked()) >= every {
                refresh_side();
                list.load(query.get_untracked().api_path());
            }
        },
        Duration::from_secs(2),
    ) {
        on_cleanup(move || handle.clear());
    }
    let on_changed = Callback::new(move |()| {
        refresh_side();
        list.load(query.get_untracked().api_path());
    });

    view! {
        <Overview summary=summary query=query set_query=set_query />
        <PendingPanel pending=pending on_changed=on_changed />
        <HostTable list=list summary=summary groups=groups labels=labels query=query set_query=set_query />
    }
}

#[component]
fn Overview(
    summary: Remote<FleetSummary>,
    query: Memo<HostQuery>,
    set_query: Callback<(HostQuery, bool)>,
) -> impl IntoView {
    let card = |label: &'static str,
                id: &'static str,
                value: String,
                note: Option<String>,
                tone: &'static str| {
        view! {
            <div class=format!("card {tone}") data-testid=format!("card-{id}")>
                <div class="card-label">{label}</div>
                <div class="card-value" data-testid="value">{value}</div>
                {note.map(|n| view! { <div class="card-note">{n}</div> })}
            </div>
        }
    };
    let sort_by = move |key: &'static str| {
        let q = query.get_untracked();
        set_query.run((
            HostQuery {
                sort: key,
                desc: true,
                page: 1,
                ..q
            },
            false,
        ));
    };
    view! {
        <section class="overview" aria-label="Fleet overview">
            {move || {
                let q = query.get();
                q.is_scoped().then(|| {
                    let mut parts = Vec::new();
                    if let Some(g) = &q.group {
                        parts.push(format!("group {g}"));
                    }
                    if !q.label.trim().is_empty() {
                        parts.push(format!("labels {}", q.label.trim()));
                    }
                    view! {
                        <p class="scope" data-testid="overview-scope">
                            {format!("Counting only the hosts in {}.", parts.join(" with "))}
                        </p>
                    }
                })
            }}
            <ErrorBox error=summary.error />
            {move || match summary.data.get() {
                None => view! { <div class="loading">"Loading the fleet summary…"</div> }.into_any(),
                Some(s) => {
                    let os_total: usize = s.os.iter().map(|o| o.count).sum();
                    let selected = query.get().os;
                    let mut os = s.os.clone();
                    os.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.os.cmp(&b.os)));
                    view! {
                        <div class="cards">
                            {card("Hosts", "total", s.total.to_string(), None, "")}
                            {card(
                                "Online",
                                "online",
                                s.online.to_string(),
                                Some(format!("{:.0} % of the fleet", s.percent_online)),
                                "good",
                            )}
                            {card("Offline", "offline", s.offline.to_string(), None, if s.offline > 0 { "bad" } else { "" })}
                            {card(
                                "Firing alerts",
                                "alerts",
                                s.firing_alerts.to_string(),
                                Some("hosts".into()),
                                if s.firing_alerts > 0 { "bad" } else { "" },
                            )}
                            {card("Stale", "stale", s.stale.to_string(), Some("no heartbeat 15 min".into()), if s.stale > 0 { "warn" } else { "" })}
                            {card("Pending approval", "pending", s.pending.to_string(), None, if s.pending > 0 { "warn" } else { "" })}
                        </div>
                        <div class="overview-row">
                            <div class="panel hotspots" data-testid="hotspots">
                                <h2>"Resource hotspots"</h2>
                                <p class="muted small">"Online hosts at or above 80 %. Click to list them first."</p>
                                <div class="hotspot-list">
                                    <button class="hotspot" class:hot={s.hotspots.cpu > 0} on:click=move |_| sort_by("cpu")>
                                        <span>"CPU"</span>
                                        <strong data-testid="hot-cpu">{s.hotspots.cpu}</strong>
                                    </button>
                                    <button class="hotspot" class:hot={s.hotspots.mem > 0} on:click=move |_| sort_by("mem")>
                                        <span>"Memory"</span>
                                        <strong data-testid="hot-mem">{s.hotspots.mem}</strong>
                                    </button>
                                    <button class="hotspot" class:hot={s.hotspots.disk > 0} on:click=move |_| sort_by("disk")>
                                        <span>"Disk"</span>
                                        <strong data-testid="hot-disk">{s.hotspots.disk}</strong>
                                    </button>
                                </div>
                            </div>
                            <div class="panel os-chart" data-testid="os-chart">
                                <h2>"Operating systems"</h2>
                                <p class="muted small">"Click one to filter the host list."</p>
                                {os.is_empty().then(|| view! { <p class="muted">"No host has reported its OS yet."</p> })}
                                <ul>
                                    {os
                                        .into_iter()
                                        .map(|o| {
                                            let share = format::share(o.count, os_total);
                                            let is_selected = selected.as_deref() == Some(o.os.as_str());
                                            let name = o.os.clone();
                                            view! {
                                                <li>
                                                    <button
                                                        class="os-bar"
                                                        class:selected=is_selected
                                                        aria-pressed=is_selected.to_string()
                                                        data-os=o.os.clone()
                                                        on:click=move |_| {
                                                            let name = name.clone();
                                                            let q = query.get_untracked();
                                                            set_query.run((
                                                                q.filtered(|f| {
                                                                    f.os = if f.os.as_deref() == Some(name.as_str()) { None } else { Some(name) };
                                                                }),
                                                                false,
                                                            ));
                                                        }
                                                    >
                                                        <span class="os-name">{o.os.clone()}</span>
                                                        <span class="bar">
                                                            <span class="fill" style=format!("width: {share}%")></span>
                                                        </span>
                                                        <span class="os-count">{format!("{} · {share} %", o.count)}</span>
                                                    </button>
                                                </li>
                                            }
                                        }.into_any())
                                        .collect_view()}
                                </ul>
                            </div>
                        </div>
                    }
                        .into_any()
                }
            }}
        </section>
    }
}

#[component]
fn PendingPanel(pending: Remote<AgentPage>, on_changed: Callback<()>) -> impl IntoView {
    let message = RwSignal::new(None::<(bool, String)>);
    let decide = move |id: String, action: &'static str| {
        message.set(None);
        leptos::task::spawn_local(async move {
            let path = format!("/api/agents/{id}/{action}");
            match api::post::<AgentSummary>(&path, &serde_json::json!({})).await {
                Ok(host) => {
                    let name = host.hostname.unwrap_or(host.id);
                    let done = if action == "approve" {
                        "approved"
                    } else {
                        "revoked"
                    };
                    message.set(Some((true, format!("{name} {done}."))));
                    on_changed.run(());
                }
                Err(e) if e.status == 409 => {
                    message.set(Some((false, format!("Cannot {action}: {}", e.message))))
                }
                Err(e) => message.set(Some((false, e.to_string()))),
            }
        });
    };
    view! {
        {move || {
            let items = pending.data.get().map(|p| p.items).unwrap_or_default();
            let msg = message.get();
            if items.is_empty() && msg.is_none() {
                return None;
            }
            Some(view! {
                <section class="panel pending" data-testid="pending" aria-label="Pending approval">
                    <h2>"Pending approval"</h2>
                    {msg.map(|(ok, m)| view! {
                        <div class=if ok { "notice" } else { "error" } role="status" data-testid="pending-message">{m}</div>
                    })}
                    {(!items.is_empty()).then(|| view! {
                        <table>
                            <thead>
                                <tr><th>"Host"</th><th>"IP"</th><th>"OS"</th><th>"Enrolled"</th><th>"Conflict"</th><th></th></tr>
                            </thead>
                            <tbody>
                                {items.into_iter().map(|a| {
                                    let (id1, id2) = (a.id.clone(), a.id.clone());
                                    view! {
                                        <tr data-id=a.id.clone()>
                                            <td>{a.hostname.clone().unwrap_or_else(|| a.id.clone())}</td>
                                            <td>{a.ips.join(", ")}</td>
                                            <td>{a.os.clone().unwrap_or_default()}</td>
                                            <td>{format::ago(api::now(), a.last_seen)}</td>
                                            <td class="conflict">{a.conflict.clone().map(|c| format!("same host as {c}"))}</td>
                                            <td class="actions">
                                                <button class="primary" on:click=move |_| decide(id1.clone(), "approve")>"Approve"</button>
                                                <button class="danger" on:click=move |_| decide(id2.clone(), "revoke")>"Revoke"</button>
                                            </td>
                                        </tr>
                                    }
                                }.into_any()).collect_view()}
                            </tbody>
                        </table>
                    })}
                </section>
            })
        }}
    }
}

#[component]
fn HostTable(
    list: Remote<AgentPage>,
    summary: Remote<FleetSummary>,
    groups: Remote<Vec<GroupView>>,
    labels: Remote<BTreeMap<String, Vec<String>>>,
    query: Memo<HostQuery>,
    set_query: Callback<(HostQuery, bool)>,
) -> impl IntoView {
    // The search box is debounced: the URL (and so the request) follows 300 ms after the
    // last key.
    let text = RwSignal::new(query.get_untracked().q);
    let typed = RwSignal::new(0u64);
    Effect::new(move |_| {
        let q = query.get().q;
        if q != text.get_untracked() {
            text.set(q);
        }
    });
    let on_search = move |ev| {
        text.set(event_target_value(&ev));
        let generation = typed.get_untracked() + 1;
        typed.set(generation);
        set_timeout(
            move || {
                if typed.try_get_untracked() == Some(generation) {
                    let q = query.get_untracked();
                    let t = text.get_untracked();
                    if q.q != t {
                        set_query.run((q.filtered(|f| f.q = t), true));
                    }
                }
            },
            Duration::from_millis(300),
        );
    };
    let header = move |key: &'static str, label: &'static str| {
        let sorted = move || query.with(|q| q.sort == key);
        let arrow = move || match query.with(|q| (q.sort == key, q.desc)) {
            (true, false) => " ▲",
            (true, true) => " ▼",
            _ => "",
        };
        let aria = move || match query.with(|q| (q.sort == key, q.desc)) {
            (true, false) => "ascending",
            (true, true) => "descending",
            _ => "none",
        };
        view! {
            <th aria-sort=aria class:sorted=sorted>
                <button class="sort" data-sort=key on:click=move |_| set_query.run((query.get_untracked().sorted_by(key), false))>
                    {label}
                    {arrow}
                </button>
            </th>
        }
    };
    let select_status = move |ev| {
        let v = event_target_value(&ev);
        let q = query.get_untracked();
        set_query.run((q.filtered(|f| f.status = AgentStatus::parse(&v)), false));
    };
    let select_os = move |ev| {
        let v = event_target_value(&ev);
        let q = query.get_untracked();
        set_query.run((q.filtered(|f| f.os = (!v.is_empty()).then_some(v)), false));
    };
    let select_group = move |ev| {
        let v = event_target_value(&ev);
        let q = query.get_untracked();
        set_query.run((
            q.filtered(|f| f.group = (!v.is_empty()).then_some(v)),
            false,
        ));
    };
    let group_options = Memo::new(move |_| {
        let mut ids: Vec<(String, String)> = groups
            .data
            .get()
            .map(|gs| gs.into_iter().map(|g| (g.id, g.name)).collect())
            .unwrap_or_default();
        // A bookmarked group that is gone still shows what the list is filtered by.
        if let Some(current) = query.get().group {
            if !ids.iter().any(|(id, _)| *id == current) {
                ids.push((current.clone(), current));
            }
        }
        ids
    });
    let select_size = move |ev| {
        let v = event_target_value(&ev).parse().unwrap_or(50);
        let q = query.get_untracked();
        set_query.run((q.filtered(|f| f.per_page = v), false));
    };
    let os_options = Memo::new(move |_| {
        let mut names: Vec<String> = summary
            .data
            .get()
            .map(|s| s.os.into_iter().map(|o| o.os).collect())
            .unwrap_or_default();
        if let Some(current) = query.get().os {
            if !names.contains(&current) {
                names.push(current);
            }
        }
        names.sort();
        names
    });

    view! {
        <section class="panel hosts" aria-label="Hosts">
            <div class="toolbar">
                <input
                    type="search"
                    placeholder="Search hostname, name or IP"
                    aria-label="Search hosts"
                    data-testid="search"
                    prop:value=move || text.get()
                    on:input=on_search
                />
                <select aria-label="Status" data-testid="status-filter" on:change=select_status
                    prop:value=move || query.get().status.map(|s| s.as_str()).unwrap_or("").to_string()>
                    <option value="">"Any status"</option>
                    {AgentStatus::ALL.into_iter().map(|s| view! {
                        <option value=s.as_str()>{super::status_label(s)}</option>
                    }.into_any()).collect_view()}
                </select>
                <select aria-label="Operating system" data-testid="os-filter" on:change=select_os
                    prop:value=move || query.get().os.unwrap_or_default()>
                    <option value="">"Any OS"</option>
                    {move || os_options.get().into_iter().map(|o| view! {
                        <option value=o.clone()>{o.clone()}</option>
                    }.into_any()).collect_view()}
                </select>
                <select aria-label="Group" data-testid="group-filter" on:change=select_group
                    prop:value=move || query.get().group.unwrap_or_default()>
                    <option value="">"Any group"</option>
                    {move || group_options.get().into_iter().map(|(id, name)| {
                        let text = if name == id { id.clone() } else { format!("{name} ({id})") };
                        view! { <option value=id>{text}</option> }
                    }.into_any()).collect_view()}
                </select>
                <label class="inline">
                    "Per page "
                    <select aria-label="Page size" data-testid="page-size" on:change=select_size
                        prop:value=move || query.get().per_page.to_string()>
                        {PAGE_SIZES.into_iter().map(|n| view! { <option value=n.to_string()>{n}</option> }.into_any()).collect_view()}
                    </select>
                </label>
                <button
                    data-testid="clear"
                    disabled=move || !query.get().has_filters()
                    on:click=move |_| set_query.run((query.get_untracked().cleared(), false))
                >
                    "Clear filters"
                </button>
                <span class="muted small" aria-live="polite">
                    {move || if list.loading.get() { "Loading…" } else { "" }}
                </span>
            </div>
            <LabelBar labels=labels query=query set_query=set_query />
            <ErrorBox error=list.error />
            <div class="table-wrap">
                <table class="host-table" data-testid="host-table">
                    <thead>
                        <tr>
                            {header("hostname", "Host")}
                            {header("status", "Status")}
                            {header("os", "OS")}
                            <th>"IP"</th>
                            {header("cpu", "CPU")}
                            {header("mem", "Mem")}
                            {header("disk", "Disk")}
                            {header("last_seen", "Last seen")}
                            <th>"Alerts"</th>
                        </tr>
                    </thead>
                    <tbody>
                        {move || {
                            let now = api::now();
                            match list.data.get() {
                                None => view! { <tr><td colspan="9" class="muted">"Loading hosts…"</td></tr> }.into_any(),
                                Some(page) if page.items.is_empty() => view! {
                                    <tr><td colspan="9" class="muted" data-testid="empty">"No host matches."</td></tr>
                                }.into_any(),
                                Some(page) => page.items.into_iter().map(|a| {
                                    let n = a.alerts;
                                    host_row(a, n, now)
                                }.into_any()).collect_view().into_any(),
                            }
                        }}
                    </tbody>
                </table>
            </div>
            {move || list.data.get().map(|page| {
                let q = query.get();
                let last = q.last_page(page.total);
                view! {
                    <Pager
                        page=Signal::derive(move || query.get().page)
                        last=Signal::derive(move || last)
                        total=Signal::derive(move || page.total)
                        go=Callback::new(move |p: usize| {
                            let q = query.get_untracked();
                            set_query.run((HostQuery { page: p, ..q }, false));
                        })
                    />
                }
            })}
        </section>
    }
}

/// Most label values a key shows as chips; the rest are reached with a typed selector.
const CHIPS_PER_KEY: usize = 24;

/// The label filter: the selector's requirements as removable chips, a box for typing
/// any selector requirement, and the fleet's label values as chips that add `key=value`.
#[component]
fn LabelBar(
    labels: Remote<BTreeMap<String, Vec<String>>>,
    query: Memo<HostQuery>,
    set_query: Callback<(HostQuery, bool)>,
) -> impl IntoView {
    let typed = RwSignal::new(String::new());
    let set_label = move |label: String| {
        let q = query.get_untracked();
        set_query.run((q.filtered(|f| f.label = label), false));
    };
    let add = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let t = typed.get_untracked();
        if t.trim().is_empty() {
            return;
        }
        set_label(query::with_requirement(&query.get_untracked().label, &t));
        typed.set(String::new());
    };
    let toggle = move |req: String| {
        let current = query.get_untracked().label;
        let reqs = query::requirements(&current);
        match reqs.iter().position(|r| *r == req) {
            Some(i) => set_label(query::without_requirement(&current, i)),
            None => set_label(query::with_requirement(&current, &req)),
        }
    };
    view! {
        <div class="label-bar" data-testid="label-bar">
            <div class="chip-row">
                {move || {
                    let q = query.get();
                    let group = q.group.clone().map(|g| view! {
                        <span class="chip active" data-testid="group-chip">
                            {format!("group: {g}")}
                            {button("×", "x", Some("remove-group"), Callback::new(move |()| set_query.run((query.get_untracked().filtered(|f| f.group = None), false))))}
                        </span>
                    });
                    let reqs = query::requirements(&q.label).into_iter().enumerate().map(|(i, r)| view! {
                        <span class="chip active" data-testid="label-chip" data-req=r.clone()>
                            <code>{r.clone()}</code>
                            {button("×", "x", Some("remove-label"), Callback::new(move |()| set_label(query::without_requirement(&query.get_untracked().label, i))))}
                        </span>
                    }.into_any()).collect_view();
                    view! { {group} {reqs} }
                }}
                <form class="selector-form" on:submit=add>
                    <input
                        class="mono"
                        placeholder="Label selector, e.g. site in (ferry-*), !retired"
                        aria-label="Add a label selector"
                        data-testid="label-input"
                        prop:value=move || typed.get()
                        on:input=move |ev| typed.set(event_target_value(&ev))
                    />
                    <button type="submit">"Add"</button>
                </form>
            </div>
            <ErrorBox error=labels.error />
            {move || labels.data.get().filter(|l| !l.is_empty()).map(|all| {
                let selected = query::requirements(&query.get().label);
                view! {
                    <div class="label-values">
                        {all.into_iter().map(|(key, values)| {
                            let more = values.len().saturating_sub(CHIPS_PER_KEY);
                            let chips = values.into_iter().take(CHIPS_PER_KEY).map(|v| {
                                let req = format!("{key}={v}");
                                let on = selected.contains(&req);
                                let r = req.clone();
                                view! {
                                    <button class="chip" data-testid="label-value" data-label=req.clone()
                                        aria-pressed=on.to_string() on:click=move |_| toggle(r.clone())>{v}</button>
                                }
                            }.into_any()).collect_view();
                            view! {
                                <span class="label-key">
                                    <strong>{key.clone()}</strong>
                                    {chips}
                                    {(more > 0).then(|| view! { <span class="muted small">{format!("+{more} more")}</span> })}
                                </span>
                            }
                        }.into_any()).collect_view()}
                    </div>
                }
            })}
        </div>
    }
}

fn pct_cell(value: Option<u8>) -> impl IntoView {
    view! {
        <td class="num" class:hot=format::is_hot(value)>{format::pct(value)}</td>
    }
}

fn host_row(a: AgentSummary, alerts: usize, now: u64) -> impl IntoView {
    let name = a.hostname.clone().unwrap_or_else(|| a.id.clone());
    let display = a
        .display_name
        .clone()
        .filter(|d| Some(d) != a.hostname.as_ref());
    view! {
        <tr data-id=a.id.clone() data-testid="host-row">
            <td>
                <Link href=format!("/hosts/{}", a.id)>
                    <span data-testid="hostname">{name}</span>
                </Link>
                {display.map(|d| view! { <div class="muted small">{d}</div> })}
                {(!a.labels.is_empty()).then(|| {
                    let text = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" · ");
                    view! { <div class="muted small mono" data-testid="labels">{text}</div> }
                })}
            </td>
            <td>
                <StatusBadge status=a.status stale=a.stale />
                {a.maintenance.clone().map(|m| view! { <MaintenanceBadge maintenance=m /> })}
            </td>
            <td data-testid="os">{a.os.clone().unwrap_or_else(|| "–".into())}</td>
            <td class="mono small">{a.ips.first().cloned().unwrap_or_default()}</td>
            {pct_cell(a.cpu)}
            {pct_cell(a.mem)}
            {pct_cell(a.disk)}
            <td title=a.last_seen.map(format::timestamp)>{format::ago(now, a.last_seen)}</td>
            <td class="num">
                {(alerts > 0).then(|| view! { <span class="badge alert" data-testid="alerts">{alerts}</span> })}
            </td>
        </tr>
    }
}
