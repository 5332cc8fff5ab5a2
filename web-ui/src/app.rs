//! The shell: login gate, navigation, the live indicator, and the page for the URL.

use leptos::prelude::*;

use crate::api;
use crate::live::{use_live, Live};
use crate::pages;
use crate::route::{use_router, Link, Page, Router};

/// Whether this tab holds an API key; pages read the key itself from sessionStorage.
#[derive(Debug, Clone, Copy)]
pub struct Auth {
    pub logged_in: RwSignal<bool>,
}

impl Auth {
    pub fn log_out(&self) {
        api::set_key(None);
        self.logged_in.set(false);
    }
}

#[component]
pub fn App() -> impl IntoView {
    Router::install();
    let auth = Auth {
        logged_in: RwSignal::new(api::key().is_some()),
    };
    provide_context(auth);
    Live::install();
    view! {
        <Show
            when=move || auth.logged_in.get()
            fallback=|| view! { <pages::login::LoginPage /> }
        >
            <Shell />
        </Show>
    }
}

#[component]
fn Shell() -> impl IntoView {
    let router = use_router();
    let live = use_live();
    let auth = expect_context::<Auth>();
    let page = Memo::new(move |_| router.loc.with(|l| l.page()));
    let nav = move |href: &'static str, label: &'static str, active: fn(&Page) -> bool| {
        view! {
            <Link
                href=href.to_string()
                class=String::from("nav-link")
            >
                <span class:active=move || page.with(active)>{label}</span>
            </Link>
        }
    };
    view! {
        <header class="top">
            <div class="brand">"EdgeFleet"</div>
            <nav aria-label="Main">
                {nav("/", "Hosts", |p| matches!(p, Page::Hosts | Page::Host { .. }))}
                {nav("/groups", "Groups", |p| matches!(p, Page::Groups))}
                {nav("/rollouts", "Rollouts", |p| matches!(p, Page::Rollouts | Page::Rollout { .. }))}
                {nav("/audit", "Audit log", |p| matches!(p, Page::Audit))}
                {nav("/packages", "Packages", |p| matches!(p, Page::Packages))}
            </nav>
            <div class="spacer"></div>
            <span
                class="live"
                class:on=move || live.connected.get()
                data-testid="live"
                title="Live events from /api/events; when they are down the page polls"
            >
                {move || if live.connected.get() { "● Live" } else { "○ Polling" }}
            </span>
            <button class="ghost" on:click=move |_| auth.log_out()>
                "Log out"
            </button>
        </header>
        <main>
            {move || match page.get() {
                Page::Hosts => view! { <pages::hosts::HostsPage /> }.into_any(),
                Page::Host { id } => view! { <pages::host::HostPage id=id /> }.into_any(),
                Page::Audit => view! { <pages::audit::AuditPage /> }.into_any(),
                Page::Packages => view! { <pages::packages::PackagesPage /> }.into_any(),
                Page::Groups => view! { <pages::groups::GroupsPage /> }.into_any(),
                Page::Rollouts => view! { <pages::rollouts::RolloutsPage /> }.into_any(),
                Page::Rollout { id } => view! { <pages::rollouts::RolloutPage id=id /> }.into_any(),
                Page::NotFound => {
                    view! {
                        <section class="panel">
                            <h1>"Not found"</h1>
                            <p>
                                "There is no page here. " <Link href="/".to_string()>
                                    "Back to the hosts"
                                </Link>
                            </p>
                        </section>
                    }
                        .into_any()
                }
            }}
        </main>
    }
}
