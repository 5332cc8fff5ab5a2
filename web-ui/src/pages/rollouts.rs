//! Staged rollouts: the list (newest first) with each one's progress, and one rollout wave
//! by wave (hosts, soak, the health gate's verdict) with its hosts, pause, resume and
//! abort. Both refresh every 2 s while a rollout can still change by itself; rollouts send
//! no live events of their own.

use std::time::Duration;

use edgefleet_codec::api::{GateView, RolloutView, WaveView};
use leptos::prelude::*;

use super::{confirm, progress_bar, state_badge, ErrorBox, Remote};
use crate::api::{self, ApiError};
use crate::format;
use crate::query::encode;
use crate::rollout::{host_failed, is_live, progress};
use crate::route::Link;

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
            <p class="muted small">
                "An update or config push applied in waves: a canary, then growing shares of the target, each gated on the fleet's health. Create one with "
                <code>"edgefleet rollouts create"</code> " or " <code>"POST /api/rollouts"</code> "."
            </p>
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
