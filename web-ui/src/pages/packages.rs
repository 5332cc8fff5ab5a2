//! Fleet-wide package search (`/api/packages?name=`): every host with the package, grouped
//! by version. On a console without the inventory API the page says so.

use edgefleet_codec::api::PackageSearch;
use leptos::prelude::*;

use super::{route_missing, Remote};
use crate::route::{use_router, Link};

#[component]
pub fn PackagesPage() -> impl IntoView {
    let router = use_router();
    let name = Memo::new(move |_| router.loc.with(|l| l.param("name")).unwrap_or_default());
    let text = RwSignal::new(name.get_untracked());
    let result = Remote::<PackageSearch>::new();
    Effect::new(move |_| {
        let n = name.get();
        if !n.trim().is_empty() {
            result.load(format!(
                "/api/packages?name={}",
                crate::query::encode(n.trim())
            ));
        }
    });
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let n = text.get_untracked();
        let search = crate::query::search_string(&[("name", n.trim().to_string())]);
        router.go(&format!("/packages{search}"), false);
    };
    view! {
        <h1>"Packages"</h1>
        <section class="panel" data-testid="packages">
            <form class="toolbar" on:submit=submit>
                <input type="search" placeholder="Exact package name, e.g. openssl" aria-label="Package name"
                    data-testid="package-name"
                    prop:value=move || text.get() on:input=move |ev| text.set(event_target_value(&ev)) />
                <button type="submit" class="primary">"Find hosts"</button>
            </form>
            {move || {
                if name.get().trim().is_empty() {
                    return view! { <p class="muted">"Name a package to see which hosts have it, by version."</p> }.into_any();
                }
                match (result.data.get(), result.error.get()) {
                    (_, Some(e)) if route_missing(&e) => view! {
                        <p class="notice" data-testid="inventory-missing">"Inventory is not available on this console yet."</p>
                    }.into_any(),
                    (_, Some(e)) => view! { <div class="error" role="alert">{e.to_string()}</div> }.into_any(),
                    (None, None) => view! { <div class="loading">"Loading…"</div> }.into_any(),
                    (Some(s), None) => view! {
                        <p data-testid="package-summary">{format!("{} is installed on {} hosts in {} versions.", s.name, s.hosts, s.versions.len())}</p>
                        <ul class="versions">
                            {s.versions.into_iter().map(|v| view! {
                                <li data-testid="package-version">
                                    <strong class="mono">{v.version.clone()}</strong>
                                    <span class="muted">{format!(" · {} hosts", v.count)}</span>
                                    <div>
                                        {v.hosts.into_iter().map(|h| {
                                            let label = h.hostname.clone().unwrap_or_else(|| h.id.clone());
                                            view! { <Link href=format!("/hosts/{}?tab=inventory", h.id)>{label}</Link>" " }
                                        }.into_any()).collect_view()}
                                    </div>
                                </li>
                            }.into_any()).collect_view()}
                        </ul>
                    }.into_any(),
                }
            }}
        </section>
    }
}
