//! A host's software inventory: search, removed packages, scan freshness, rescan, CSV
//! export and a side-by-side comparison with another host. On a console without the
//! inventory API it says so instead of failing.

use std::time::Duration;

use edgefleet_codec::api::{CommandView, InventoryCompare, InventoryPage, PackageView};
use leptos::prelude::*;
use wasm_bindgen::JsCast;

use super::{route_missing, ErrorBox, Pager, Remote};
use crate::api;
use crate::format;
use crate::live::use_live;
use crate::query::{encode, search_string};
use crate::route::Link;

const PER_PAGE: usize = 100;

fn inventory_path(id: &str, q: &str, removed: bool, page: usize) -> String {
    let mut params = vec![
        ("page", page.to_string()),
        ("per_page", PER_PAGE.to_string()),
    ];
    if !q.trim().is_empty() {
        params.push(("q", q.trim().to_string()));
    }
    if removed {
        params.push(("include_removed", "true".into()));
    }
    format!(
        "/api/agents/{}/inventory{}",
        encode(id),
        search_string(&params)
    )
}

#[component]
pub fn Inventory(id: String) -> impl IntoView {
    let live = use_live();
    let inv = Remote::<InventoryPage>::new();
    let text = RwSignal::new(String::new());
    let q = RwSignal::new(String::new());
    let removed = RwSignal::new(false);
    let page = RwSignal::new(1usize);
    let typed = RwSignal::new(0u64);
    let id = StoredValue::new(id);
    Effect::new(move |_| {
        inv.load(inventory_path(
            &id.get_value(),
            &q.get(),
            removed.get(),
            page.get(),
        ));
    });
    let on_search = move |ev| {
        text.set(event_target_value(&ev));
        let generation = typed.get_untracked() + 1;
        typed.set(generation);
        set_timeout(
            move || {
                if typed.try_get_untracked() == Some(generation) {
                    page.set(1);
                    q.set(text.get_untracked());
                }
            },
            Duration::from_millis(300),
        );
    };

    // Rescan: a command followed until it is final, then the list reloads.
    let rescan = RwSignal::new(None::<CommandView>);
    let action_error = RwSignal::new(None::<api::ApiError>);
    Effect::new(move |_| {
        if let Some(c) = live.command.get() {
            if rescan.with_untracked(|r| r.as_ref().is_some_and(|r| r.id == c.id)) {
                rescan.set(Some(c));
            }
        }
    });
    Effect::new(move |prev: Option<bool>| {
        let done = rescan.with(|r| r.as_ref().is_some_and(|r| super::host::is_final(&r.state)));
        if done && prev == Some(false) {
            inv.load(inventory_path(
                &id.get_value(),
                &q.get_untracked(),
                removed.get_untracked(),
                page.get_untracked(),
            ));
        }
        done
    });
    let start_rescan = move |_| {
        action_error.set(None);
        leptos::task::spawn_local(async move {
            let path = format!("/api/agents/{}/rescan", encode(&id.get_value()));
            match api::post::<CommandView>(&path, &serde_json::json!({})).await {
                Ok(c) => {
                    let cid = c.id.clone();
                    rescan.set(Some(c));
                    loop {
                        api::sleep(1000).await;
                        let ours = rescan
                            .try_with_untracked(|r| {
                                r.as_ref().is_some_and(|r| {
                                    r.id == cid && !super::host::is_final(&r.state)
                                })
                            })
                            .unwrap_or(false);
                        if !ours {
                            return;
                        }
                        if let Ok(c) =
                            api::get::<CommandView>(&format!("/api/commands/{cid}")).await
                        {
                            if rescan.try_set(Some(c)).is_some() {
                                return;
                            }
                        }
                    }
                }
                Err(e) => action_error.set(Some(e)),
            }
        });
    };
    let export = move |_| {
        action_error.set(None);
        leptos::task::spawn_local(async move {
            if let Err(e) = download_csv(&id.get_value(), removed.get_untracked()).await {
                action_error.set(Some(e));
            }
        });
    };

    view! {
        <section class="panel" data-testid="inventory">
            <h2>"Installed software"</h2>
            {move || match inv.error.get() {
                Some(e) if route_missing(&e) => Some(view! {
                    <p class="notice" data-testid="inventory-missing">"Inventory is not available on this console yet."</p>
                }.into_any()),
                Some(e) => Some(view! { <div class="error" role="alert">{e.to_string()}</div> }.into_any()),
                None => None,
            }}
            {move || inv.data.get().map(|p| {
                let now = api::now();
                view! {
                    <div class="inv-meta" data-testid="inventory-meta">
                        <span>{format!("{} installed", p.installed)}</span>
                        <span>{format!("{} removed on record", p.removed)}</span>
                        <span>{p.source.clone().map(|s| format!("source {s}"))}</span>
                        <span title=p.last_scan.map(format::timestamp)>
                            {format!("last scan {}", format::ago(now, p.last_scan))}
                        </span>
                        {p.stale_scan.then(|| view! {
                            <span class="badge stale" data-testid="stale-scan">"Scan is stale"</span>
                        })}
                    </div>
                    {p.error.clone().map(|e| view! { <div class="error">{e}</div> })}
                }
            })}
            <div class="toolbar">
                <input
                    type="search"
                    placeholder="Search name or version"
                    aria-label="Search packages"
                    data-testid="inventory-search"
                    prop:value=move || text.get()
                    on:input=on_search
                />
                <label class="inline">
                    <input
                        type="checkbox"
                        data-testid="show-removed"
                        prop:checked=move || removed.get()
                        on:change=move |ev| {
                            page.set(1);
                            removed.set(event_target_checked(&ev));
                        }
                    />
                    "Show removed"
                </label>
                <button data-testid="rescan" on:click=start_rescan
                    disabled=move || rescan.with(|r| r.as_ref().is_some_and(|r| !super::host::is_final(&r.state)))>
                    "Rescan"
                </button>
                <button data-testid="export-csv" on:click=export>"Export CSV"</button>
                {move || rescan.get().map(|c| view! {
                    <span class=format!("badge cmd-{}", c.state) data-testid="rescan-state">{format!("rescan {}", c.state)}</span>
                })}
            </div>
            <ErrorBox error=action_error />
            {move || inv.data.get().map(|p| {
                let total = p.total;
                let last = total.div_ceil(PER_PAGE).max(1);
                view! {
                    {package_table(p.items)}
                    <Pager
                        page=Signal::derive(move || page.get())
                        last=Signal::derive(move || last)
                        total=Signal::derive(move || total)
                        go=Callback::new(move |n: usize| page.set(n))
                    />
                }
            })}
        </section>
        <Compare id=id.get_value() />
    }
}

fn package_table(items: Vec<PackageView>) -> impl IntoView {
    if items.is_empty() {
        return view! { <p class="muted" data-testid="no-packages">"No package matches."</p> }
            .into_any();
    }
    view! {
        <div class="table-wrap">
            <table data-testid="package-table">
                <thead><tr><th>"Package"</th><th>"Version"</th><th>"Arch"</th><th>"Source"</th><th>"First seen"</th><th>"Last seen"</th></tr></thead>
                <tbody>
                    {items.into_iter().map(|p| {
                        let href = format!("/packages{}", search_string(&[("name", p.name.clone())]));
                        let label = p.name.clone();
                        view! {
                        <tr data-testid="package-row" data-name=p.name.clone() class:removed=p.removed>
                            <td>
                                <Link href=href>{label}</Link>
                                {p.removed.then(|| view! { <span class="badge">"removed"</span> })}
                            </td>
                            <td class="mono small">{p.version.clone()}</td>
                            <td>{p.arch.clone()}</td>
                            <td>{p.source.clone()}</td>
                            <td>{format::timestamp(p.first_seen)}</td>
                            <td>{p.removed_at.map(|r| format!("removed {}", format::timestamp(r))).unwrap_or_else(|| format::timestamp(p.last_seen))}</td>
                        </tr>
                        }
                    }.into_any()).collect_view()}
                </tbody>
            </table>
        </div>
    }.into_any()
}

/// Fetches the CSV with the API key (a plain link could not send it) and saves it.
async fn download_csv(id: &str, removed: bool) -> Result<(), api::ApiError> {
    let path = format!(
        "/api/agents/{}/inventory.csv{}",
        encode(id),
        if removed { "?include_removed=true" } else { "" }
    );
    let key = api::key();
    let response = api::send("GET", &path, None, key.as_deref()).await?;
    let body = api::text(&response).await?;
    if response.status() != 200 {
        return Err(api::ApiError {
            status: response.status(),
            message: serde_json::from_str::<edgefleet_codec::api::ApiErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or(body),
        });
    }
    let fail = |e: wasm_bindgen::JsValue| api::ApiError {
        status: 0,
        message: format!("saving the CSV: {e:?}"),
    };
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(&body));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type("text/csv");
    let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options).map_err(fail)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(fail)?;
    let a: web_sys::HtmlAnchorElement = document()
        .create_element("a")
        .map_err(fail)?
        .unchecked_into();
    a.set_href(&url);
    a.set_download(&format!("inventory-{id}.csv"));
    a.click();
    let _ = web_sys::Url::revoke_object_url(&url);
    Ok(())
}

/// Side by side: packages only on this host, only on the other, and version differences.
#[component]
fn Compare(id: String) -> impl IntoView {
    let other = RwSignal::new(String::new());
    let result = Remote::<InventoryCompare>::new();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let b = other.get_untracked().trim().to_string();
        if !b.is_empty() {
            result.load(format!(
                "/api/inventory/compare{}",
                search_string(&[("a", id.clone()), ("b", b)])
            ));
        }
    };
    view! {
        <section class="panel" data-testid="compare">
            <h2>"Compare with another host"</h2>
            <form class="toolbar" on:submit=submit>
                <input placeholder="Other host id" aria-label="Other host id" data-testid="compare-with"
                    prop:value=move || other.get() on:input=move |ev| other.set(event_target_value(&ev)) />
                <button type="submit" class="primary">"Compare"</button>
            </form>
            <ErrorBox error=result.error />
            {move || result.data.get().map(|c| view! {
                <p class="muted" data-testid="compare-summary">
                    {format!("{} the same, {} differ, {} only here, {} only on {}", c.same, c.differs.len(), c.only_a.len(), c.only_b.len(), c.b)}
                </p>
                <div class="diff">
                    <div>
                        <h3>"Only on this host"</h3>
                        <ul data-testid="only-a">{c.only_a.iter().map(|p| view! { <li>{format!("{} {}", p.name, p.version)}</li> }.into_any()).collect_view()}</ul>
                    </div>
                    <div>
                        <h3>{format!("Only on {}", c.b)}</h3>
                        <ul data-testid="only-b">{c.only_b.iter().map(|p| view! { <li>{format!("{} {}", p.name, p.version)}</li> }.into_any()).collect_view()}</ul>
                    </div>
                </div>
                <table data-testid="differs">
                    <thead><tr><th>"Package"</th><th>"This host"</th><th>"Other host"</th></tr></thead>
                    <tbody>
                        {c.differs.iter().map(|d| view! {
                            <tr data-testid="differs-row"><td>{d.name.clone()}</td><td class="mono small">{d.a.clone()}</td><td class="mono small">{d.b.clone()}</td></tr>
                        }.into_any()).collect_view()}
                    </tbody>
                </table>
            })}
        </section>
    }
}
