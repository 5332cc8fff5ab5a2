//! One host: tabs for the overview (with maintenance, labels, groups and effective
//! settings), metric charts, managed apps (with commands followed live to their end), the
//! inventory and the host's audit entries.

use std::time::Duration;

use edgefleet_codec::api::{
    AgentDetail, AuditPage, CommandRequest, CommandView, EffectiveSetting, LabelsUpdate,
    MaintenanceRequest, MetricSeries,
};
use leptos::prelude::*;

use super::{button, text_field, ErrorBox, MaintenanceBadge, MaintenanceForm, Remote, StatusBadge};
use crate::api;
use crate::chart::{self, Frame, Scale};
use crate::format;
use crate::live::use_live;
use crate::route::{use_router, Link};

const TABS: [(&str, &str); 5] = [
    ("overview", "Overview"),
    ("metrics", "Metrics"),
    ("apps", "Apps"),
    ("inventory", "Inventory"),
    ("audit", "Audit"),
];
const RANGES: [&str; 5] = ["1h", "6h", "24h", "7d", "30d"];

#[component]
pub fn HostPage(id: String) -> impl IntoView {
    let router = use_router();
    let live = use_live();
    let detail = Remote::<AgentDetail>::new();
    let path = format!("/api/agents/{}", crate::query::encode(&id));
    let tab = Memo::new(move |_| {
        router
            .loc
            .with(|l| l.param("tab"))
            .filter(|t| TABS.iter().any(|(k, _)| k == t))
            .unwrap_or_else(|| "overview".into())
    });
    {
        let path = path.clone();
        let id = id.clone();
        // Reload on this host's presence changes (or after a reset), not the fleet's.
        Effect::new(move |_| {
            live.status.track();
            let ours = live
                .status_agent
                .with_untracked(|a| a.as_ref().is_none_or(|a| *a == id));
            if ours {
                detail.load(path.clone());
            }
        });
    }
    {
        let path = path.clone();
        if let Ok(handle) =
            set_interval_with_handle(move || detail.load(path.clone()), Duration::from_secs(15))
        {
            on_cleanup(move || handle.clear());
        }
    }
    let reload = Callback::new(move |()| detail.load(path.clone()));
    let id2 = id.clone();
    view! {
        <p class="crumbs"><Link href="/".to_string()>"Hosts"</Link> " / " {id.clone()}</p>
        <ErrorBox error=detail.error />
        {move || detail.data.get().map(|d| {
            let name = d.summary.hostname.clone().unwrap_or_else(|| d.summary.id.clone());
            view! {
                <div class="host-head">
                    <h1 data-testid="host-title">{name}</h1>
                    <StatusBadge status=d.summary.status stale=d.summary.stale />
                    {d.summary.maintenance.clone().map(|m| {
                        let text = super::maintenance_text(&m);
                        view! {
                            <MaintenanceBadge maintenance=m />
                            <span class="muted small" data-testid="maintenance-text">{text}</span>
                        }
                    })}
                    <span class="muted">{d.summary.os.clone()}</span>
                </div>
            }
        })}
        <div class="tabs" role="tablist">
            {TABS.into_iter().map(|(key, label)| {
                let id = id2.clone();
                view! {
                    <button
                        role="tab"
                        class="tab"
                        data-tab=key
                        aria-selected=move || (tab.get() == key).to_string()
                        on:click=move |_| router.go(&format!("/hosts/{}?tab={key}", crate::query::encode(&id)), false)
                    >
                        {label}
                    </button>
                }
            }.into_any()).collect_view()}
        </div>
        {move || {
            let id = id.clone();
            match tab.get().as_str() {
                "metrics" => view! { <MetricsTab id=id /> }.into_any(),
                "apps" => view! { <AppsTab id=id detail=detail reload=reload /> }.into_any(),
                "inventory" => view! { <InventoryTab id=id /> }.into_any(),
                "audit" => view! { <HostAuditTab id=id /> }.into_any(),
                _ => view! { <OverviewTab detail=detail /> <ManagePanels id=id detail=detail reload=reload /> }.into_any(),
            }
        }}
    }
}

fn row(label: &'static str, value: impl Into<String>) -> impl IntoView {
    view! {
        <dt>{label}</dt>
        <dd>{value.into()}</dd>
    }
}

fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "–".into())
}

#[component]
fn OverviewTab(detail: Remote<AgentDetail>) -> impl IntoView {
    move || {
        let Some(d) = detail.data.get() else {
            return view! { <div class="loading">"Loading…"</div> }.into_any();
        };
        let now = api::now();
        let s = &d.summary;
        view! {
            <div class="grid2">
                <section class="panel">
                    <h2>"Metadata"</h2>
                    <dl>
                        {row("Hostname", opt(&s.hostname))}
                        {row("Display name", opt(&s.display_name))}
                        {row("OS", opt(&s.os))}
                        {row("Kernel", opt(&d.kernel))}
                        {row("Architecture", opt(&d.arch))}
                        {row("IP addresses", if s.ips.is_empty() { "–".to_string() } else { s.ips.join(", ") })}
                        {row("Agent version", opt(&d.agent_version))}
                        {row("Heartbeat", d.heartbeat_interval_s.map(|i| format!("every {i} s")).unwrap_or_else(|| "–".into()))}
                        {row("Boot time", d.boot_time.map(|b| format::timestamp(b * 1000)).unwrap_or_else(|| "–".into()))}
                    </dl>
                </section>
                <section class="panel">
                    <h2>"Identity"</h2>
                    <dl>
                        {row("Host id", s.id.clone())}
                        {row("Key fingerprint", d.key_fingerprint.clone())}
                        {row("First seen", format::timestamp(d.first_seen))}
                        {row("Status since", format!("{} ({})", format::timestamp(d.status_since), format::ago(now, Some(d.status_since))))}
                        {row("Last seen", format::ago(now, s.last_seen))}
                    </dl>
                </section>
                <section class="panel">
                    <h2>"Vitals"</h2>
                    {match d.vitals.clone() {
                        None => view! { <p class="muted">"No heartbeat yet."</p> }.into_any(),
                        Some(v) => view! {
                            <div class="vitals">
                                <div class:hot=format::is_hot(Some(v.cpu))><span>"CPU"</span><strong>{format!("{} %", v.cpu)}</strong></div>
                                <div class:hot=format::is_hot(Some(v.mem))><span>"Memory"</span><strong>{format!("{} %", v.mem)}</strong></div>
                                <div class:hot=format::is_hot(Some(v.disk))><span>"Disk"</span><strong>{format!("{} %", v.disk)}</strong></div>
                                <div><span>"Load"</span><strong>{format!("{:.2}", v.load)}</strong></div>
                                <div><span>"Uptime"</span><strong>{format::duration(v.uptime_s)}</strong></div>
                                <div><span>"Network in"</span><strong>{format::rate(v.rx_bps)}</strong></div>
                                <div><span>"Network out"</span><strong>{format::rate(v.tx_bps)}</strong></div>
                            </div>
                        }.into_any(),
                    }}
                </section>
                <section class="panel">
                    <h2>"Status history"</h2>
                    <table>
                        <thead><tr><th>"When"</th><th>"Status"</th><th>"Cause"</th></tr></thead>
                        <tbody>
                            {d.status_history.iter().take(20).map(|c| view! {
                                <tr>
                                    <td title=format::timestamp(c.at)>{format::ago(now, Some(c.at))}</td>
                                    <td><StatusBadge status=c.status /></td>
                                    <td>{format!("{:?}", c.cause).to_lowercase()}</td>
                                </tr>
                            }.into_any()).collect_view()}
                        </tbody>
                    </table>
                </section>
            </div>
        }.into_any()
    }
}

/// Maintenance, labels, groups and effective settings: under the overview, outside its
/// re-rendered block, so what the operator types survives the detail's refreshes.
#[component]
fn ManagePanels(id: String, detail: Remote<AgentDetail>, reload: Callback<()>) -> impl IntoView {
    view! {
        <div class="grid2 manage">
            <MaintenancePanel id=id.clone() detail=detail reload=reload />
            <LabelsPanel id=id detail=detail reload=reload />
            <GroupsSettingsPanel detail=detail />
        </div>
    }
}

#[component]
fn MaintenancePanel(
    id: String,
    detail: Remote<AgentDetail>,
    reload: Callback<()>,
) -> impl IntoView {
    let path = format!("/api/agents/{}/maintenance", crate::query::encode(&id));
    let open = RwSignal::new(false);
    let error = RwSignal::new(None::<api::ApiError>);
    let busy = RwSignal::new(false);
    let p1 = path.clone();
    let enter = Callback::new(move |req: MaintenanceRequest| {
        let path = p1.clone();
        busy.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match api::post::<serde::de::IgnoredAny>(&path, &req).await {
                Ok(_) => {
                    open.set(false);
                    reload.run(());
                }
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    });
    let end = move |()| {
        let path = path.clone();
        busy.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match api::delete(&path).await {
                Ok(()) => reload.run(()),
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    };
    let end = StoredValue::new(end);
    view! {
        <section class="panel" data-testid="maintenance-panel">
            <h2>"Maintenance"</h2>
            <ErrorBox error=error />
            {move || detail.data.get().map(|d| match d.summary.maintenance {
                Some(m) => {
                    let now = api::now();
                    view! {
                        <dl>
                            {row("Reason", m.reason.clone())}
                            {row("Since", format!("{} ({})", format::timestamp(m.since), format::ago(now, Some(m.since))))}
                            {row("Ends", m.until.map(format::timestamp).unwrap_or_else(|| "when ended by hand".into()))}
                            {row("By", m.by.clone())}
                            {row("Still allowed", if m.allow.is_empty() { "no commands".to_string() } else { m.allow.join(", ") })}
                        </dl>
                        <p>
                            {button("End maintenance", "primary", Some("end-maintenance"), Callback::new(move |()| end.with_value(|f| f(()))))}
                        </p>
                    }.into_any()
                }
                None => view! {
                    <p class="muted">"Not in maintenance."</p>
                    <p>
                        {button("Enter maintenance", "", Some("enter-maintenance"), Callback::new(move |()| open.set(true)))}
                    </p>
                }.into_any(),
            })}
            {move || (open.get() && detail.data.with(|d| d.as_ref().is_some_and(|d| d.summary.maintenance.is_none()))).then(|| view! {
                <MaintenanceForm on_submit=enter on_cancel=Callback::new(move |()| open.set(false)) busy=busy submit_label="Enter maintenance" />
            })}
        </section>
    }
}

#[component]
fn LabelsPanel(id: String, detail: Remote<AgentDetail>, reload: Callback<()>) -> impl IntoView {
    let path = StoredValue::new(format!("/api/agents/{}/labels", crate::query::encode(&id)));
    let key = RwSignal::new(String::new());
    let value = RwSignal::new(String::new());
    let error = RwSignal::new(None::<api::ApiError>);
    let update = move |req: LabelsUpdate| {
        error.set(None);
        let path = path.get_value();
        leptos::task::spawn_local(async move {
            // The answer is the new labels; the detail is reloaded for them and the rest.
            match api::put::<serde::de::IgnoredAny>(&path, &req).await {
                Ok(_) => reload.run(()),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let set = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let k = key.get_untracked().trim().to_string();
        if k.is_empty() {
            return;
        }
        let mut req = LabelsUpdate::default();
        req.set.insert(k, value.get_untracked().trim().to_string());
        key.set(String::new());
        value.set(String::new());
        update(req);
    };
    view! {
        <section class="panel" data-testid="labels-panel">
            <h2>"Labels"</h2>
            <p class="muted small">"Operator labels win over the agent's own (from its config)."</p>
            <ErrorBox error=error />
            {move || detail.data.get().map(|d| {
                let sources = d.label_sources;
                if sources.labels.is_empty() {
                    return view! { <p class="muted">"No labels."</p> }.into_any();
                }
                view! {
                    <table data-testid="labels">
                        <thead><tr><th>"Key"</th><th>"Value"</th><th>"Source"</th><th></th></tr></thead>
                        <tbody>
                            {sources.labels.iter().map(|(k, v)| {
                                let operator = sources.operator.contains_key(k);
                                let source = match (operator, sources.agent.get(k)) {
                                    (true, Some(own)) if own != v => format!("operator (agent says {own})"),
                                    (true, _) => "operator".to_string(),
                                    (false, _) => "agent".to_string(),
                                };
                                let k2 = k.clone();
                                view! {
                                    <tr data-testid="label-row" data-key=k.clone()>
                                        <td><code>{k.clone()}</code></td>
                                        <td><code>{v.clone()}</code></td>
                                        <td class="muted" data-testid="label-source">{source}</td>
                                        <td class="actions">
                                            {operator.then(|| view! {
                                                {button("Remove", "danger", None, Callback::new(move |()| update(LabelsUpdate { remove: vec![k2.clone()], ..LabelsUpdate::default() })))}
                                            })}
                                        </td>
                                    </tr>
                                }
                            }.into_any()).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            })}
            <form class="cmd-form" data-testid="label-form" on:submit=set>
                {text_field("Key", "label-key", key, "site", true)}
                {text_field("Value", "label-value-input", value, "", false)}
                <button type="submit">"Set label"</button>
            </form>
        </section>
    }
}

fn setting_row(
    label: &'static str,
    setting: Option<EffectiveSetting>,
    unit: &'static str,
) -> impl IntoView {
    let (value, source) = match setting {
        Some(s) => (format!("{}{unit}", s.value), s.source),
        None => ("–".into(), "the agent's own config".into()),
    };
    view! {
        <tr data-testid="setting-row">
            <td>{label}</td>
            <td class="num">{value}</td>
            <td class="muted">{source}</td>
        </tr>
    }
}

#[component]
fn GroupsSettingsPanel(detail: Remote<AgentDetail>) -> impl IntoView {
    view! {
        <section class="panel" data-testid="groups-panel">
            <h2>"Groups and settings"</h2>
            {move || detail.data.get().map(|d| view! {
                <p data-testid="host-groups">
                    {if d.groups.is_empty() {
                        view! { <span class="muted">"In no group."</span> }.into_any()
                    } else {
                        d.groups.into_iter().map(|g| {
                            let href = format!("/?group={}", crate::query::encode(&g));
                            view! { <Link href=href class="chip".to_string()>{g}</Link> }
                        }.into_any()).collect_view().into_any()
                    }}
                </p>
                {match d.effective {
                    None => view! { <p class="muted">"No effective settings reported."</p> }.into_any(),
                    Some(e) => view! {
                        <table data-testid="settings">
                            <thead><tr><th>"Setting"</th><th class="num">"Value"</th><th>"From"</th></tr></thead>
                            <tbody>
                                {setting_row("Heartbeat interval", e.heartbeat_interval_s, " s")}
                                {setting_row("Offline grace", Some(e.offline_grace_s), " s")}
                                {setting_row("Hotspot threshold", Some(e.hotspot_threshold), " %")}
                                {setting_row("Hotspot window", Some(e.hotspot_window_s), " s")}
                            </tbody>
                        </table>
                    }.into_any(),
                }}
            })}
        </section>
    }
}

#[component]
fn MetricsTab(id: String) -> impl IntoView {
    let router = use_router();
    let series = Remote::<MetricSeries>::new();
    let range = Memo::new(move |_| {
        router
            .loc
            .with(|l| l.param("range"))
            .filter(|r| RANGES.contains(&r.as_str()))
            .unwrap_or_else(|| "1h".into())
    });
    {
        let id = id.clone();
        Effect::new(move |_| {
            series.load(format!(
                "/api/agents/{}/metrics?range={}",
                crate::query::encode(&id),
                range.get()
            ));
        });
    }
    view! {
        <section class="panel">
            <div class="toolbar">
                <span>"Range"</span>
                {RANGES.into_iter().map(|r| {
                    let id = id.clone();
                    view! {
                        <button
                            class="chip"
                            aria-pressed=move || (range.get() == r).to_string()
                            on:click=move |_| router.go(&format!("/hosts/{}?tab=metrics&range={r}", crate::query::encode(&id)), true)
                        >{r}</button>
                    }
                }.into_any()).collect_view()}
                <span class="muted small">{move || series.data.get().map(|s| format!("{} points, {} resolution", s.points.len(), s.resolution))}</span>
            </div>
            <ErrorBox error=series.error />
            {move || series.data.get().map(|s| {
                let end = api::now();
                let span = match range.get().as_str() {
                    "6h" => 6 * 3_600_000,
                    "24h" => 24 * 3_600_000,
                    "7d" => 7 * 86_400_000,
                    "30d" => 30 * 86_400_000,
                    _ => 3_600_000,
                };
                let start = end.saturating_sub(span);
                let pick = |f: fn(&edgefleet_codec::api::MetricPoint) -> f32| -> Vec<(u64, f64)> {
                    s.points.iter().map(|p| (p.at, f64::from(f(p)))).collect()
                };
                view! {
                    <div class="charts">
                        <Chart title="CPU" unit="%" start=start end=end points=pick(|p| p.cpu) />
                        <Chart title="Memory" unit="%" start=start end=end points=pick(|p| p.mem) />
                        <Chart title="Disk" unit="%" start=start end=end points=pick(|p| p.disk) />
                        <Chart title="Network in (bit/s)" unit="rate" start=start end=end points=pick(|p| p.rx_bps) />
                        <Chart title="Network out (bit/s)" unit="rate" start=start end=end points=pick(|p| p.tx_bps) />
                    </div>
                }
            })}
        </section>
    }
}

/// An axis label for a rate in bytes per second, as bits: `0`, `800`, `1.6k`, `2M`.
fn compact_bits(bytes_per_s: f64) -> String {
    let bits = bytes_per_s * 8.0;
    let (v, suffix) = if bits >= 1e9 {
        (bits / 1e9, "G")
    } else if bits >= 1e6 {
        (bits / 1e6, "M")
    } else if bits >= 1e3 {
        (bits / 1e3, "k")
    } else {
        (bits, "")
    };
    if v >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}{suffix}")
    } else {
        format!("{v:.1}{suffix}")
    }
}

/// A line chart with time and value axes and a hover readout. `unit` is `%` (axis 0-100)
/// or `rate` (bytes per second, axis scaled to the data, labels in bit/s).
#[component]
fn Chart(
    title: &'static str,
    unit: &'static str,
    start: u64,
    end: u64,
    points: Vec<(u64, f64)>,
) -> impl IntoView {
    let frame = Frame::METRIC;
    let is_rate = unit == "rate";
    let max = if is_rate {
        chart::nice_max(points.iter().map(|p| p.1).fold(0.0, f64::max), 128.0)
    } else {
        100.0
    };
    let label = move |v: f64| {
        if is_rate {
            format::rate(v.round().clamp(0.0, f64::from(u32::MAX)) as u32)
        } else {
            format!("{v:.1} {unit}")
        }
    };
    let scale = Scale {
        frame,
        start,
        end,
        max,
    };
    let path = chart::line_path(&scale, &points, chart::gap_for(&points));
    let dates = chart::ticks_show_dates(start, end);
    let x_ticks = chart::time_ticks(start, end, 7);
    let y_ticks = chart::value_ticks(max);
    let hover = RwSignal::new(None::<usize>);
    let count = points.len();
    let pts = StoredValue::new(points);
    let on_move = move |ev: leptos::ev::MouseEvent| {
        use wasm_bindgen::JsCast;
        let Some(target) = ev
            .current_target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        else {
            return;
        };
        let rect = target.get_bounding_client_rect();
        if rect.width() <= 0.0 {
            return;
        }
        let x = (f64::from(ev.client_x()) - rect.left()) / rect.width() * frame.width;
        let at = scale.time_at(x);
        hover.set(pts.with_value(|p| chart::nearest(p, at)));
    };
    view! {
        <figure class="chart" data-testid=format!("chart-{}", title.split(" (").next().unwrap_or(title).to_lowercase().replace(' ', "-")) data-points=count>
            <figcaption>
                <span>{title}</span>
                <span class="readout" data-testid="readout">
                    {move || hover.get().and_then(|i| pts.with_value(|p| p.get(i).copied())).map(|(at, v)| {
                        format!("{} at {}", label(v), format::timestamp(at))
                    })}
                </span>
            </figcaption>
            <svg
                viewBox=format!("0 0 {} {}", frame.width, frame.height)
                role="img"
                aria-label=format!("{title} over time")
                on:mousemove=on_move
                on:mouseleave=move |_| hover.set(None)
            >
                {y_ticks.into_iter().map(|v| {
                    let y = scale.y(v);
                    view! {
                        <line class="grid" x1=frame.left x2=frame.width - frame.right y1=y y2=y />
                        <text class="tick" x=frame.left - 6.0 y=y + 4.0 text-anchor="end">{if is_rate { compact_bits(v) } else { format!("{v:.0}") }}</text>
                    }
                }.into_any()).collect_view()}
                {x_ticks.into_iter().map(|t| {
                    let x = scale.x(t);
                    view! {
                        <line class="grid" x1=x x2=x y1=frame.top y2=frame.height - frame.bottom />
                        <text class="tick" x=x y=frame.height - 6.0 text-anchor="middle">{format::clock(t, dates)}</text>
                    }
                }.into_any()).collect_view()}
                <path class="line" d=path />
                {move || hover.get().and_then(|i| pts.with_value(|p| p.get(i).copied())).map(|(at, v)| {
                    let (x, y) = (scale.x(at), scale.y(v));
                    view! {
                        <line class="cursor" x1=x x2=x y1=frame.top y2=frame.height - frame.bottom />
                        <circle class="dot" cx=x cy=y r="3" />
                    }
                })}
            </svg>
            {(count == 0).then(|| view! { <p class="muted small">"No samples in this range."</p> })}
        </figure>
    }
}

/// Command states after which nothing changes.
pub(super) fn is_final(state: &str) -> bool {
    matches!(
        state,
        "succeeded" | "failed" | "rolled_back" | "rejected" | "expired"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    None,
    Config,
    Update,
}

#[component]
fn AppsTab(id: String, detail: Remote<AgentDetail>, reload: Callback<()>) -> impl IntoView {
    let live = use_live();
    let command = RwSignal::new(None::<CommandView>);
    let error = RwSignal::new(None::<api::ApiError>);
    let form = RwSignal::new((String::new(), Form::None));
    let config_text = RwSignal::new(String::new());
    let (url, version, sha) = (
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
    );
    // Follow the command: live events when the stream is up, and polling regardless, until
    // it reaches a final state.
    Effect::new(move |_| {
        if let Some(c) = live.command.get() {
            if command.with_untracked(|cur| cur.as_ref().is_some_and(|cur| cur.id == c.id)) {
                let done = is_final(&c.state);
                command.set(Some(c));
                if done {
                    reload.run(());
                }
            }
        }
    });
    let poll = move |cid: String| {
        leptos::task::spawn_local(async move {
            loop {
                api::sleep(1000).await;
                let still_ours = command
                    .try_with_untracked(|c| c.as_ref().is_some_and(|c| c.id == cid))
                    .unwrap_or(false);
                if !still_ours {
                    return;
                }
                if command.with_untracked(|c| c.as_ref().is_some_and(|c| is_final(&c.state))) {
                    return;
                }
                if let Ok(c) = api::get::<CommandView>(&format!("/api/commands/{cid}")).await {
                    let done = is_final(&c.state);
                    if command.try_set(Some(c)).is_some() {
                        return;
                    }
                    if done {
                        reload.run(());
                        return;
                    }
                }
            }
        });
    };
    let send = move |action: &'static str, req: CommandRequest| {
        let id = id.clone();
        error.set(None);
        leptos::task::spawn_local(async move {
            let path = format!("/api/agents/{}/{action}", crate::query::encode(&id));
            match api::post::<CommandView>(&path, &req).await {
                Ok(c) => {
                    let cid = c.id.clone();
                    command.set(Some(c));
                    form.set((String::new(), Form::None));
                    poll(cid);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let send = StoredValue::new(send);
    let submit_config = move |app: String| {
        let values = crate::rollout::config_values(&config_text.get_untracked());
        if values.is_empty() {
            error.set(Some(api::ApiError {
                status: 0,
                message: "Write at least one key = value line.".into(),
            }));
            return;
        }
        send.with_value(|s| {
            s(
                "push-config",
                CommandRequest {
                    app: Some(app),
                    values,
                    ..CommandRequest::default()
                },
            )
        });
    };
    let submit_update = move |app: String| {
        send.with_value(|s| {
            s(
                "update-app",
                CommandRequest {
                    app: Some(app),
                    url: Some(url.get_untracked().trim().to_string()),
                    version: Some(version.get_untracked().trim().to_string()),
                    sha256: Some(sha.get_untracked().trim().to_string()),
                    ..CommandRequest::default()
                },
            )
        });
    };
    view! {
        <section class="panel">
            <h2>"Managed apps"</h2>
            <ErrorBox error=error />
            {move || command.get().map(|c| view! {
                <div class="command" data-testid="command" data-state=c.state.clone()>
                    <strong>{format!("{} {}", c.action, c.app.clone().unwrap_or_default())}</strong>
                    <span class=format!("badge cmd-{}", c.state) data-testid="command-state">{c.state.clone()}</span>
                    {(!is_final(&c.state)).then(|| view! { <span class="spinner" aria-hidden="true"></span> })}
                    <ol class="steps">
                        {c.progress.iter().map(|s| view! {
                            <li>{s.step.clone()}{s.pct.map(|p| format!(" ({p} %)"))}</li>
                        }.into_any()).collect_view()}
                    </ol>
                    {c.message.clone().map(|m| view! { <p class="muted">{m}</p> })}
                </div>
            })}
            {move || {
                let Some(d) = detail.data.get() else {
                    return view! { <div class="loading">"Loading…"</div> }.into_any();
                };
                if d.apps.is_empty() {
                    return view! { <p class="muted">"This host declares no managed apps."</p> }.into_any();
                }
                view! {
                    <table data-testid="apps">
                        <thead><tr><th>"App"</th><th>"Status"</th><th>"Version"</th><th></th></tr></thead>
                        <tbody>
                            {d.apps.into_iter().map(|a| {
                                let (a1, a2, a3, a4, a5) = (a.id.clone(), a.id.clone(), a.id.clone(), a.id.clone(), a.id.clone());
                                let busy = move || command.with(|c| c.as_ref().is_some_and(|c| !is_final(&c.state)));
                                view! {
                                    <tr data-app=a.id.clone()>
                                        <td>{a.id.clone()}</td>
                                        <td><span class=format!("badge app-{}", a.status)>{a.status.clone()}</span></td>
                                        <td>{a.version.clone().unwrap_or_else(|| "–".into())}</td>
                                        <td class="actions">
                                            <button data-testid="restart" disabled=busy on:click=move |_| send.with_value(|s| s("restart-app", CommandRequest { app: Some(a1.clone()), ..CommandRequest::default() }))>"Restart"</button>
                                            <button disabled=busy on:click=move |_| form.set((a2.clone(), Form::Config))>"Push config"</button>
                                            <button disabled=busy on:click=move |_| form.set((a3.clone(), Form::Update))>"Update"</button>
                                        </td>
                                    </tr>
                                    {move || {
                                        let (app, kind) = form.get();
                                        (app == a4).then(|| {
                                            let app = a5.clone();
                                            match kind {
                                                Form::Config => view! {
                                                    <tr><td colspan="4">
                                                        <form class="cmd-form" on:submit=move |ev: leptos::ev::SubmitEvent| { ev.prevent_default(); submit_config(app.clone()) }>
                                                            <label>"Config keys, one " <code>"dotted.key = value"</code> " per line"
                                                                <textarea rows="3" prop:value=move || config_text.get() on:input=move |ev| config_text.set(event_target_value(&ev))></textarea>
                                                            </label>
                                                            <button type="submit" class="primary">"Push config"</button>
                                                            <button type="button" on:click=move |_| form.set((String::new(), Form::None))>"Cancel"</button>
                                                        </form>
                                                    </td></tr>
                                                }.into_any(),
                                                Form::Update => view! {
                                                    <tr><td colspan="4">
                                                        <form class="cmd-form" on:submit=move |ev: leptos::ev::SubmitEvent| { ev.prevent_default(); submit_update(app.clone()) }>
                                                            <label>"Archive URL (.tar.gz)"<input required prop:value=move || url.get() on:input=move |ev| url.set(event_target_value(&ev)) /></label>
                                                            <label>"Version"<input required prop:value=move || version.get() on:input=move |ev| version.set(event_target_value(&ev)) /></label>
                                                            <label>"SHA-256 (hex)"<input required pattern="[0-9a-fA-F]{64}" prop:value=move || sha.get() on:input=move |ev| sha.set(event_target_value(&ev)) /></label>
                                                            <button type="submit" class="primary">"Update"</button>
                                                            <button type="button" on:click=move |_| form.set((String::new(), Form::None))>"Cancel"</button>
                                                        </form>
                                                    </td></tr>
                                                }.into_any(),
                                                Form::None => ().into_any(),
                                            }
                                        })
                                    }}
                                }
                            }.into_any()).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
        </section>
    }
}

#[component]
fn InventoryTab(id: String) -> impl IntoView {
    view! { <super::inventory::Inventory id=id /> }
}

#[component]
fn HostAuditTab(id: String) -> impl IntoView {
    let page = Remote::<AuditPage>::new();
    let live = use_live();
    let path = format!("/api/audit?agent={}&per_page=50", crate::query::encode(&id));
    Effect::new(move |_| {
        live.audit.track();
        page.load(path.clone());
    });
    view! {
        <section class="panel">
            <h2>"Audit entries for this host"</h2>
            <ErrorBox error=page.error />
            {move || page.data.get().map(|p| super::audit::audit_table(p.items))}
        </section>
    }
}
