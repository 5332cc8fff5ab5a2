//! The pages, and the pieces they share: remote data with loading and error states,
//! status badges, the pager, text fields, buttons and the maintenance form.
//!
//! Wasm size: every distinct view type gets its own copy of the rendering code. So list
//! items are erased with `.into_any()` (all lists then share the `Vec<AnyView>` code), and
//! text fields and buttons go through [`text_field`] and [`button`]. This kept the bundle
//! under its 400 KB gzipped budget when groups, labels and rollouts came in.

pub mod audit;
pub mod groups;
pub mod host;
pub mod hosts;
pub mod inventory;
pub mod login;
pub mod packages;
pub mod rollouts;

use edgefleet_codec::api::{AgentStatus, MaintenanceRequest, MaintenanceView, SilenceUntil};
use leptos::prelude::*;
use serde::de::DeserializeOwned;

use crate::api::{self, ApiError};

/// Data from one API path, with its loading and error state. Keeps the last good data
/// while a refresh runs, and drops answers that a newer request has overtaken.
#[derive(Debug)]
pub struct Remote<T: Send + Sync + 'static> {
    pub data: RwSignal<Option<T>>,
    pub error: RwSignal<Option<ApiError>>,
    pub loading: RwSignal<bool>,
    seq: RwSignal<u64>,
    /// Taken when the page is built: the async answer runs outside the reactive owner.
    auth: Option<crate::app::Auth>,
}

impl<T: Send + Sync + 'static> Clone for Remote<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T: Send + Sync + 'static> Copy for Remote<T> {}

impl<T: DeserializeOwned + Send + Sync + 'static> Remote<T> {
    pub fn new() -> Remote<T> {
        Remote {
            data: RwSignal::new(None),
            error: RwSignal::new(None),
            loading: RwSignal::new(false),
            seq: RwSignal::new(0),
            auth: use_context::<crate::app::Auth>(),
        }
    }

    pub fn load(&self, path: String) {
        let me = *self;
        let seq = me.seq.get_untracked() + 1;
        me.seq.set(seq);
        me.loading.set(true);
        leptos::task::spawn_local(async move {
            let result = api::get::<T>(&path).await;
            // The page may be gone, or a newer request may have been sent.
            if me.seq.try_get_untracked() != Some(seq) {
                return;
            }
            match result {
                Ok(v) => {
                    me.data.set(Some(v));
                    me.error.set(None);
                }
                Err(e) => {
                    // The key was deleted or the console's keys were reset: back to login.
                    if e.status == 401 {
                        if let Some(auth) = me.auth {
                            auth.log_out();
                        }
                    }
                    me.error.set(Some(e));
                }
            }
            me.loading.set(false);
        });
    }
}

/// The error of a remote, in a red box with the console's message.
#[component]
pub fn ErrorBox(#[prop(into)] error: Signal<Option<ApiError>>) -> impl IntoView {
    move || {
        error.get().map(|e| {
            view! {
                <div class="error" role="alert" data-testid="error">
                    {e.to_string()}
                </div>
            }
        })
    }
}

pub fn status_class(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Online => "badge online",
        AgentStatus::Offline => "badge offline",
        AgentStatus::Pending => "badge pending",
        AgentStatus::Revoked => "badge revoked",
        AgentStatus::Unknown => "badge unknown",
    }
}

pub fn status_label(status: AgentStatus) -> &'static str {
    match status {
        AgentStatus::Online => "Online",
        AgentStatus::Offline => "Offline",
        AgentStatus::Pending => "Pending",
        AgentStatus::Revoked => "Revoked",
        AgentStatus::Unknown => "Unknown",
    }
}

#[component]
pub fn StatusBadge(status: AgentStatus, #[prop(optional)] stale: bool) -> impl IntoView {
    view! {
        <span class=status_class(status) data-testid="status">
            {status_label(status)}
        </span>
        {stale.then(|| view! { <span class="badge stale" title="No heartbeat for 15 min">"Stale"</span> })}
    }
}

/// Who put a host in maintenance, why, and until when.
pub fn maintenance_text(m: &MaintenanceView) -> String {
    let until = match m.until {
        Some(u) => format!("until {}", crate::format::timestamp(u)),
        None => "until ended by hand".into(),
    };
    format!("{} (by {}, {until})", m.reason, m.by)
}

/// The "Maintenance" badge, with the reason and end time as its tooltip.
#[component]
pub fn MaintenanceBadge(maintenance: MaintenanceView) -> impl IntoView {
    let text = maintenance_text(&maintenance);
    view! {
        <span class="badge maint" data-testid="maintenance" title=text.clone() aria-label=format!("In maintenance: {text}")>
            "Maintenance"
        </span>
    }
}

/// A state word (`running`, `passed`, ...) as a badge coloured by what it means.
pub fn state_badge(state: &str, testid: &'static str) -> impl IntoView {
    let tone = match state {
        "succeeded" | "passed" | "completed" => "good",
        "failed" | "rolled-back" | "expired" | "revert-failed" | "aborted" | "aborting" => "bad",
        "paused" | "queued" | "soaking" | "reverting" | "overridden" => "warn",
        "running" => "busy",
        _ => "",
    };
    view! { <span class=format!("badge state {tone}") data-testid=testid>{state.to_string()}</span> }
}

/// A thin bar filled to `done` of `total`, with the numbers beside it.
pub fn progress_bar(done: usize, total: usize) -> impl IntoView {
    let share = crate::format::share(done, total);
    view! {
        <span class="progress" data-done=done data-total=total title=format!("{done} of {total} hosts done")>
            <span class="bar"><span class="fill" style=format!("width: {share}%")></span></span>
            <span class="muted small">{format!("{done}/{total}")}</span>
        </span>
    }
}

/// A labelled text box bound to `value`. Every form's text fields go through this one
/// function: each distinct view shape costs its own copy of the rendering code in the wasm.
pub fn text_field(
    label: &'static str,
    testid: &'static str,
    value: RwSignal<String>,
    placeholder: &'static str,
    required: bool,
) -> AnyView {
    view! {
        <label>
            {label}
            <input
                data-testid=testid
                placeholder=placeholder
                required=required
                prop:value=move || value.get()
                on:input=move |ev| value.set(event_target_value(&ev))
            />
        </label>
    }
    .into_any()
}

/// A button that runs `on`. Buttons go through this one function, with the handler
/// behind a `Callback`, for the same reason as [`text_field`].
pub fn button(
    label: &'static str,
    class: &'static str,
    testid: Option<&'static str>,
    on: Callback<()>,
) -> AnyView {
    view! {
        <button type="button" class=class data-testid=testid on:click=move |_| on.run(())>
            {label}
        </button>
    }
    .into_any()
}

/// Command actions an operator may keep allowed during maintenance.
const MAINTENANCE_ACTIONS: [&str; 7] = [
    "request-heartbeat",
    "rescan-inventory",
    "restart-app",
    "push-config",
    "update-app",
    "rollback-app",
    "run-script",
];

/// Reason, optional duration and the commands still allowed: for one host or a group.
#[component]
pub fn MaintenanceForm(
    on_submit: Callback<MaintenanceRequest>,
    on_cancel: Callback<()>,
    #[prop(into)] busy: Signal<bool>,
    submit_label: &'static str,
) -> impl IntoView {
    let reason = RwSignal::new(String::new());
    let until = RwSignal::new(String::new());
    let allow = RwSignal::new(Vec::<&'static str>::new());
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let until = until.get_untracked().trim().to_string();
        on_submit.run(MaintenanceRequest {
            reason: reason.get_untracked().trim().to_string(),
            until: (!until.is_empty()).then_some(SilenceUntil::For(until)),
            allow: allow
                .get_untracked()
                .into_iter()
                .map(String::from)
                .collect(),
        });
    };
    view! {
        <form class="cmd-form" data-testid="maintenance-form" on:submit=submit>
            {text_field("Reason", "maintenance-reason", reason, "", true)}
            {text_field("For (empty: until ended)", "maintenance-until", until, "2h", false)}
            <fieldset class="checks">
                <legend>"Commands still allowed"</legend>
                {MAINTENANCE_ACTIONS
                    .into_iter()
                    .map(|a| {
                        view! {
                            <label class="inline">
                                <input
                                    type="checkbox"
                                    value=a
                                    on:change=move |ev| {
                                        let on = event_target_checked(&ev);
                                        allow.update(|l| {
                                            l.retain(|x| *x != a);
                                            if on {
                                                l.push(a);
                                            }
                                        });
                                    }
                                />
                                <code>{a}</code>
                            </label>
                        }
                    }.into_any())
                    .collect_view()}
            </fieldset>
            <button type="submit" class="primary" data-testid="maintenance-submit" disabled=move || busy.get()>
                {submit_label}
            </button>
            <button type="button" on:click=move |_| on_cancel.run(())>
                "Cancel"
            </button>
        </form>
    }
}

/// Asks the browser's confirm dialog; false when there is no window.
pub fn confirm(question: &str) -> bool {
    window().confirm_with_message(question).unwrap_or(false)
}

/// Previous / next with "page x of y"; `go` gets the new page number.
#[component]
pub fn Pager(
    #[prop(into)] page: Signal<usize>,
    #[prop(into)] last: Signal<usize>,
    #[prop(into)] total: Signal<usize>,
    go: Callback<usize>,
) -> impl IntoView {
    view! {
        <div class="pager">
            <button
                disabled=move || { page.get() <= 1 }
                on:click=move |_| go.run(page.get_untracked().saturating_sub(1).max(1))
                data-testid="prev"
            >
                "‹ Previous"
            </button>
            <span data-testid="page-info">
                {move || format!("Page {} of {} · {} total", page.get(), last.get(), total.get())}
            </span>
            <button
                disabled=move || { page.get() >= last.get() }
                on:click=move |_| go.run(page.get_untracked() + 1)
                data-testid="next"
            >
                "Next ›"
            </button>
        </div>
    }
}

/// Whether a 404 means the route does not exist on this console (an older console),
/// rather than a missing agent.
pub fn route_missing(e: &ApiError) -> bool {
    e.status == 404 && e.message.contains("no such route")
}
