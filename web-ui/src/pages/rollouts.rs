//! Staged rollouts: the list (newest first) with each one's progress, a form to create
//! one, and one rollout wave by wave (hosts, soak, the health gate's verdict) with its
//! hosts, pause, resume and abort. Both refresh every 2 s while a rollout can still change by itself; rollouts send
//! no live events of their own.

use std::time::Duration;

use edgefleet_codec::api::{
    CommandRequest, GateView, GroupView, RolloutCreate, RolloutView, WaveView,
};
use leptos::prelude::*;

use super::{button, confirm, progress_bar, state_badge, text_field, ErrorBox, Remote};
use crate::api::{self, ApiError};
use crate::format;
use crate::query::encode;
use crate::rollout::{config_values, host_failed, is_live, progress, wave_percents};
use crate::route::{use_router, Link};

const REFRESH: Duration = Duration::from_secs(2);

fn title(r: &RolloutView) -> String {
    r.name.clone().unwrap_or_else(|| r.id.clone())
}

fn target(r: &RolloutView) -> String {
    let app = r.app.clone().unwrap_or_default();
    match &r.version {
        Some(v) => format!("{} {app} → {v}", r.action),
        None => format!("{} {app}", r.action),
    }
}

#[component]
pub fn RolloutsPage() -> impl IntoView {
    let creating = RwSignal::new(false);
    let list = Remote::<Vec<RolloutView>>::new();
    list.load("/api/rollouts".into());
    if let Ok(handle) = set_interval_with_handle(
        move || {
            let live = list.data.with_untracked(|l| {
                l.as_ref()
                    .is_some_and(|l| l.iter().any(|r| is_live(&r.state)))
            });
            if live {
                list.load("/api/rollouts".into());
            }
        },
        REFRESH,
    ) {
        on_cleanup(move || handle.clear());
    }
    view! {
        <h1>"Rollouts"</h1>
        <section class="panel">
            <div class="toolbar">
                {button("New rollout", "primary", Some("new-rollout"), Callback::new(move |()| creating.update(|c| *c = !*c)))}
                <span class="muted small">
                    "An update or config push applied in waves: a canary, then growing shares of the target, each gated on the fleet's health."
                </span>
            </div>
            {move || creating.get().then(|| view! { <CreateForm on_cancel=Callback::new(move |()| creating.set(false)) /> })}
            <ErrorBox error=list.error />
            {move || match list.data.get() {
                None => view! { <div class="loading">"Loading rollouts…"</div> }.into_any(),
                Some(l) if l.is_empty() => view! { <p class="muted" data-testid="no-rollouts">"No rollouts yet."</p> }.into_any(),
                Some(l) => {
                    let now = api::now();
                    view! {
                        <div class="table-wrap">
                            <table data-testid="rollouts">
                                <thead><tr>
                                    <th>"Rollout"</th><th>"Action"</th><th>"App"</th><th>"Version"</th>
                                    <th>"State"</th><th>"Wave"</th><th>"Progress"</th><th>"Created"</th>
                                </tr></thead>
                                <tbody>
                                    {l.into_iter().map(|r| {
                                        let (done, total) = progress(&r, None);
                                        let name = title(&r);
                                        let wave = r.waves.get(r.current_wave).map(|w| w.label.clone()).unwrap_or_else(|| "–".into());
                                        view! {
                                            <tr data-testid="rollout-row" data-id=r.id.clone()>
                                                <td>
                                                    <Link href=format!("/rollouts/{}", encode(&r.id))>{name}</Link>
                                                    <div class="muted small">{format!("by {}", r.created_by)}</div>
                                                </td>
                                                <td><code>{r.action.clone()}</code></td>
                                                <td>{r.app.clone().unwrap_or_else(|| "–".into())}</td>
                                                <td>{r.version.clone().unwrap_or_else(|| "–".into())}</td>
                                                <td>{state_badge(&r.state, "rollout-state")}</td>
                                                <td>{format!("{} ({} of {})", wave, (r.current_wave + 1).min(r.waves.len()), r.waves.len())}</td>
                                                <td>{progress_bar(done, total)}</td>
                                                <td title=format::timestamp(r.created_at)>{format::ago(now, Some(r.created_at))}</td>
                                            </tr>
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

/// The create form. What the console validates (percentages rising to 100, the target
/// naming hosts, the update's URL) comes back as its 400 message.
#[component]
fn CreateForm(on_cancel: Callback<()>) -> impl IntoView {
    let router = use_router();
    let groups = Remote::<Vec<GroupView>>::new();
    groups.load("/api/groups".into());
    let name = RwSignal::new(String::new());
    let update = RwSignal::new(false);
    let app = RwSignal::new(String::new());
    let config = RwSignal::new(String::new());
    let (url, version, sha) = (
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
        RwSignal::new(String::new()),
    );
    let target_kind = RwSignal::new("group".to_string());
    let group = RwSignal::new(String::new());
    let target = RwSignal::new(String::new());
    let canary = RwSignal::new("1".to_string());
    let waves = RwSignal::new("100".to_string());
    let soak = RwSignal::new("5m".to_string());
    let max_failure = RwSignal::new("5".to_string());
    let error = RwSignal::new(None::<ApiError>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let text = |s: RwSignal<String>| {
            let t = s.get_untracked().trim().to_string();
            (!t.is_empty()).then_some(t)
        };
        let fail = |message: String| error.set(Some(ApiError { status: 0, message }));
        let waves = match wave_percents(&waves.get_untracked()) {
            Ok(w) => w,
            Err(e) => return fail(e),
        };
        let Ok(canary) = canary.get_untracked().trim().parse::<usize>() else {
            return fail("Canary must be a number of hosts.".into());
        };
        let Ok(max_failure_pct) = max_failure.get_untracked().trim().parse::<f32>() else {
            return fail("Max failure % must be a number.".into());
        };
        let is_update = update.get_untracked();
        let request = CommandRequest {
            app: text(app),
            url: if is_update { text(url) } else { None },
            version: if is_update { text(version) } else { None },
            sha256: if is_update { text(sha) } else { None },
            values: if is_update {
                Default::default()
            } else {
                config_values(&config.get_untracked())
            },
            ..CommandRequest::default()
        };
        let mut create = RolloutCreate {
            name: text(name),
            action: if is_update {
                "update-app"
            } else {
                "push-config"
            }
            .into(),
            request,
            canary: Some(canary),
            waves: (!waves.is_empty()).then_some(waves),
            soak: text(soak),
            max_failure_pct: Some(max_failure_pct),
            ..RolloutCreate::default()
        };
        match target_kind.get_untracked().as_str() {
            "group" => create.group = text(group),
            "selector" => create.selector = text(target),
            _ => {
                create.agents = Some(
                    target
                        .get_untracked()
                        .split(|c: char| c == ',' || c.is_whitespace())
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                )
            }
        }
        error.set(None);
        leptos::task::spawn_local(async move {
            match api::post::<RolloutView>("/api/rollouts", &create).await {
                Ok(r) => router.go(&format!("/rollouts/{}", encode(&r.id)), false),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <form class="group-form" data-testid="rollout-form" on:submit=submit>
            <h2>"New rollout"</h2>
            <ErrorBox error=error />
            <div class="cmd-form">
                {text_field("Name", "rollout-name", name, "sensor-hub 2.1 to the ferries", false)}
                <label>"Action"
                    <select data-testid="rollout-action" on:change=move |ev| update.set(event_target_value(&ev) == "update-app")>
                        <option value="push-config">"push-config"</option>
                        <option value="update-app">"update-app"</option>
                    </select>
                </label>
                {text_field("App", "rollout-app", app, "sensor-hub", true)}
            </div>
            {move || if update.get() {
                view! {
                    <div class="cmd-form">
                        {text_field("Archive URL (.tar.gz)", "rollout-url", url, "http://…", true)}
                        {text_field("Version", "rollout-version", version, "2.1", true)}
                        {text_field("SHA-256 (hex)", "rollout-sha", sha, "", true)}
                    </div>
                }.into_any()
            } else {
                view! {
                    <label class="block">"Config keys, one dotted.key = value per line"
                        <textarea rows="3" class="mono" data-testid="rollout-config" prop:value=move || config.get()
                            on:input=move |ev| config.set(event_target_value(&ev))></textarea>
                    </label>
                }.into_any()
            }}
            <div class="cmd-form">
                <label>"Target"
                    <select data-testid="rollout-target-kind" on:change=move |ev| target_kind.set(event_target_value(&ev))>
                        <option value="group">"a group"</option>
                        <option value="selector">"a label selector"</option>
                        <option value="agents">"host ids"</option>
                    </select>
                </label>
                {move || if target_kind.get() == "group" {
                    view! {
                        <label>"Group"
                            <select data-testid="rollout-group" prop:value=move || group.get() on:change=move |ev| group.set(event_target_value(&ev))>
                                <option value="">"Choose a group"</option>
                                {move || groups.data.get().unwrap_or_default().into_iter().map(|g| {
                                    let text = format!("{} ({} hosts)", g.name, g.agents);
                                    view! { <option value=g.id>{text}</option> }.into_any()
                                }).collect_view()}
                            </select>
                        </label>
                    }.into_any()
                } else {
                    text_field("Selector or host ids", "rollout-target", target, "site in (ferry-*)", true)
                }}
            </div>
            <div class="cmd-form">
                {text_field("Canary hosts", "rollout-canary", canary, "1", false)}
                {text_field("Waves (cumulative %)", "rollout-waves", waves, "25, 50, 100", false)}
                {text_field("Soak", "rollout-soak", soak, "5m", false)}
                {text_field("Max failure %", "rollout-max-failure", max_failure, "5", false)}
            </div>
            <p>
                <button type="submit" class="primary" data-testid="create-rollout">"Start rollout"</button>
                " "
                {button("Cancel", "", None, on_cancel)}
            </p>
        </form>
    }
}

#[component]
pub fn RolloutPage(id: String) -> impl IntoView {
    let rollout = Remote::<RolloutView>::new();
    let path = format!("/api/rollouts/{}", encode(&id));
    rollout.load(path.clone());
    {
        let path = path.clone();
        if let Ok(handle) = set_interval_with_handle(
            move || {
                let live = rollout
                    .data
                    .with_untracked(|r| r.as_ref().is_none_or(|r| is_live(&r.state)));
                if live {
                    rollout.load(path.clone());
                }
            },
            REFRESH,
        ) {
            on_cleanup(move || handle.clear());
        }
    }
    let error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    let reload = path.clone();
    let act = StoredValue::new(move |verb: &'static str| {
        if verb == "abort"
            && !confirm("Abort this rollout? No more hosts are started; hosts already updated keep the new version.")
        {
            return;
        }
        let path = format!("{path}/{verb}");
        busy.set(true);
        error.set(None);
        let reload = reload.clone();
        leptos::task::spawn_local(async move {
            // The answer is the rollout; reloading it shares the one parsed type.
            match api::post::<serde::de::IgnoredAny>(&path, &serde_json::json!({})).await {
                Ok(_) => rollout.load(reload),
                Err(e) => error.set(Some(e)),
            }
            busy.set(false);
        });
    });
    let button = move |verb: &'static str, label: &'static str, class: &'static str| {
        view! {
            <button class=class data-testid=format!("rollout-{verb}") disabled=move || busy.get()
                on:click=move |_| act.with_value(|f| f(verb))>{label}</button>
        }
    };
    view! {
        <p class="crumbs"><Link href="/rollouts".to_string()>"Rollouts"</Link> " / " {id.clone()}</p>
        <ErrorBox error=rollout.error />
        <ErrorBox error=error />
        {move || rollout.data.get().map(|r| {
            let now = api::now();
            let (done, total) = progress(&r, None);
            let labels: Vec<String> = r.waves.iter().map(|w| w.label.clone()).collect();
            let state = r.state.clone();
            view! {
                <div class="host-head">
                    <h1 data-testid="rollout-title">{title(&r)}</h1>
                    {state_badge(&r.state, "rollout-state")}
                    <span class="muted">{target(&r)}</span>
                    {progress_bar(done, total)}
                </div>
                {r.reason.clone().map(|why| view! { <p class="muted" data-testid="rollout-reason">{why}</p> })}
                <div class="toolbar">
                    {(state == "running").then(|| button("pause", "Pause", ""))}
                    {(state == "paused").then(|| button("resume", "Resume", "primary"))}
                    {matches!(state.as_str(), "running" | "paused").then(|| button("abort", "Abort", "danger"))}
                    <span class="muted small">
                        {format!(
                            "Created by {} {} · soak {} · gate: at most {} % failed of at least {} executed{}",
                            r.created_by,
                            format::ago(now, Some(r.created_at)),
                            format::duration(r.soak_s),
                            r.max_failure_pct,
                            r.min_executed,
                            r.rate_per_minute.map(|n| format!(" · {n} hosts a minute")).unwrap_or_default(),
                        )}
                    </span>
                </div>
                <section class="waves" aria-label="Waves">
                    {r.waves.iter().map(|w| wave_card(&r, w, now)).collect_view()}
                </section>
                <section class="panel">
                    <h2>"Hosts"</h2>
                    <div class="table-wrap">
                        <table data-testid="rollout-hosts">
                            <thead><tr><th>"Host"</th><th>"Wave"</th><th>"State"</th><th>"Finished"</th><th>"Message"</th></tr></thead>
                            <tbody>
                                {r.hosts.clone().into_iter().map(|h| {
                                    let name = h.hostname.clone().unwrap_or_else(|| h.agent.clone());
                                    view! {
                                    <tr data-testid="rollout-host" data-id=h.agent.clone() class:failed=host_failed(&h.state)>
                                        <td>
                                            <Link href=format!("/hosts/{}", encode(&h.agent))>{name}</Link>
                                            <div class="muted small mono">{h.agent.clone()}</div>
                                        </td>
                                        <td>{labels.get(h.wave).cloned().unwrap_or_else(|| h.wave.to_string())}</td>
                                        <td>{state_badge(&h.state, "host-state")}</td>
                                        <td>{h.finished_at.map(|t| format::ago(now, Some(t))).unwrap_or_default()}</td>
                                        <td class="detail">{h.message.clone()}</td>
                                    </tr>
                                }}.into_any()).collect_view()}
                            </tbody>
                        </table>
                    </div>
                </section>
            }
        })}
    }
}

fn wave_card(r: &RolloutView, w: &WaveView, now: u64) -> AnyView {
    let (done, total) = progress(r, Some(w.index));
    let soak = w.soak_until.map(|t| {
        let when = if t > now {
            format!("soak ends in {}", format::duration((t - now) / 1000))
        } else {
            "soak over".to_string()
        };
        view! { <span title=format::timestamp(t) data-testid="wave-soak">{when}</span> }
    });
    view! {
        <div class="panel wave" class:current=r.current_wave == w.index data-testid="wave" data-index=w.index data-state=w.state.clone()>
            <div class="wave-head">
                <strong data-testid="wave-label">{w.label.clone()}</strong>
                {state_badge(&w.state, "wave-state")}
                <span class="muted small" data-testid="wave-hosts">{format!("{} hosts", w.hosts)}</span>
            </div>
            {progress_bar(done, total)}
            <div class="muted small">
                {w.started_at.map(|t| format!("started {} ", format::ago(now, Some(t))))}
                {soak}
            </div>
            {w.gate.clone().map(gate_view)}
        </div>
    }
    .into_any()
}

fn gate_view(g: GateView) -> impl IntoView {
    view! {
        <div class="gate" class:failed=!g.passed data-testid="gate" data-passed=g.passed.to_string()>
            <div>
                {state_badge(if g.passed { "passed" } else { "failed" }, "gate-verdict")}
                " "
                <span>{g.verdict.clone()}</span>
            </div>
            <div class="muted small">
                {format!("{} executed, {} failed ({:.1} %)", g.executed, g.failed, g.failure_pct)}
            </div>
            {(!g.unhealthy.is_empty()).then(|| view! {
                <p class="unhealthy small" data-testid="gate-unhealthy">{format!("Unhealthy: {}", g.unhealthy.join("; "))}</p>
            })}
        </div>
    }
}
