//! Packages across the fleet (`/api/packages?name=`). The inventory API is new: on a
//! console without it the page says so instead of failing.

use leptos::prelude::*;
use serde_json::Value;

use super::{route_missing, Remote};
use crate::route::use_router;

#[component]
pub fn PackagesPage() -> impl IntoView {
    let router = use_router();
    let name = Memo::new(move |_| router.loc.with(|l| l.param("name")).unwrap_or_default());
    let text = RwSignal::new(name.get_untracked());
    let result = Remote::<Value>::new();
    Effect::new(move |_| {
        let n = name.get();
        result.load(format!("/api/packages?name={}", crate::query::encode(&n)));
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
                <input type="search" placeholder="Package name" aria-label="Package name"
                    prop:value=move || text.get() on:input=move |ev| text.set(event_target_value(&ev)) />
                <button type="submit" class="primary">"Find hosts"</button>
            </form>
            {move || match (result.data.get(), result.error.get()) {
                (_, Some(e)) if route_missing(&e) => view! {
                    <p class="notice" data-testid="inventory-missing">"Inventory is not available on this console yet."</p>
                }.into_any(),
                (_, Some(e)) => view! { <div class="error" role="alert">{e.to_string()}</div> }.into_any(),
                (None, None) => view! { <div class="loading">"Loading…"</div> }.into_any(),
                (Some(v), None) => json_table(v).into_any(),
            }}
        </section>
    }
}

/// A generic table for a JSON answer: a list of objects, or an object with `items`.
pub fn json_table(value: Value) -> impl IntoView {
    let rows: Vec<Value> = match value {
        Value::Array(a) => a,
        Value::Object(mut o) => match o.remove("items") {
            Some(Value::Array(a)) => a,
            _ => vec![Value::Object(o)],
        },
        other => vec![other],
    };
    if rows.is_empty() {
        return view! { <p class="muted">"Nothing found."</p> }.into_any();
    }
    let mut columns: Vec<String> = Vec::new();
    for r in &rows {
        if let Value::Object(o) = r {
            for k in o.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    let cell = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    view! {
        <div class="table-wrap">
            <table>
                <thead><tr>{columns.iter().map(|c| view! { <th>{c.clone()}</th> }).collect_view()}</tr></thead>
                <tbody>
                    {rows.iter().map(|r| view! {
                        <tr>{columns.iter().map(|c| view! { <td>{cell(r.get(c))}</td> }).collect_view()}</tr>
                    }).collect_view()}
                </tbody>
            </table>
        </div>
    }.into_any()
}
