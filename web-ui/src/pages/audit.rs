//! The audit log: filter by host and action, paged, with the hash-chain check.

use edgefleet_codec::api::{AuditEntry, AuditPage, AuditVerify};
use leptos::prelude::*;

use super::{ErrorBox, Pager, Remote};
use crate::api;
use crate::format;
use crate::live::use_live;
use crate::query::AuditQuery;
use crate::route::{use_router, Link};

const PER_PAGE: usize = 50;

#[component]
pub fn AuditPage() -> impl IntoView {
    let router = use_router();
    let live = use_live();
    let query = Memo::new(move |_| router.loc.with(|l| AuditQuery::parse(&l.search)));
    let page = Remote::<AuditPage>::new();
    let verify = Remote::<AuditVerify>::new();
    Effect::new(move |_| {
        live.audit.track();
        page.load(query.get().api_path(PER_PAGE));
    });
    Effect::new(move |_| {
        live.audit.track();
        verify.load("/api/audit/verify".into());
    });
    let agent = RwSignal::new(query.get_untracked().agent);
    let action = RwSignal::new(query.get_untracked().action);
    let apply = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let q = AuditQuery {
            agent: agent.get_untracked().trim().to_string(),
            action: action.get_untracked().trim().to_string(),
            page: 1,
        };
        router.go(&format!("/audit{}", q.to_search()), false);
    };
    let clear = move |_| {
        agent.set(String::new());
        action.set(String::new());
        router.go("/audit", false);
    };
    view! {
        <h1>"Audit log"</h1>
        <section class="panel">
            {move || verify.data.get().map(|v| if v.ok {
                view! { <div class="notice" data-testid="verify">{format!("Hash chain intact: {} entries verified.", v.entries)}</div> }.into_any()
            } else {
                view! { <div class="error" data-testid="verify">{format!("Hash chain BROKEN at entry {}: the log was altered.", v.broken_at.map(|b| b.to_string()).unwrap_or_else(|| "?".into()))}</div> }.into_any()
            })}
            <ErrorBox error=verify.error />
            <form class="toolbar" on:submit=apply>
                <input placeholder="Host id" aria-label="Host id" data-testid="audit-agent"
                    prop:value=move || agent.get() on:input=move |ev| agent.set(event_target_value(&ev)) />
                <input placeholder="Action, e.g. approve" aria-label="Action" data-testid="audit-action"
                    prop:value=move || action.get() on:input=move |ev| action.set(event_target_value(&ev)) />
                <button type="submit" class="primary">"Filter"</button>
                <button type="button" on:click=clear>"Clear filters"</button>
            </form>
            <ErrorBox error=page.error />
            {move || page.data.get().map(|p| {
                let total = p.total;
                let last = total.div_ceil(PER_PAGE).max(1);
                view! {
                    {audit_table(p.items)}
                    <Pager
                        page=Signal::derive(move || query.get().page)
                        last=Signal::derive(move || last)
                        total=Signal::derive(move || total)
                        go=Callback::new(move |n: usize| {
                            let q = AuditQuery { page: n, ..query.get_untracked() };
                            router.go(&format!("/audit{}", q.to_search()), false);
                        })
                    />
                }
            })}
        </section>
    }
}

/// Audit entries as a table, newest first.
pub fn audit_table(items: Vec<AuditEntry>) -> impl IntoView {
    if items.is_empty() {
        return view! { <p class="muted" data-testid="audit-empty">"No entries."</p> }.into_any();
    }
    let now = api::now();
    view! {
        <div class="table-wrap">
            <table data-testid="audit-table">
                <thead><tr><th>"#"</th><th>"When"</th><th>"Actor"</th><th>"Action"</th><th>"Target"</th><th>"Detail"</th></tr></thead>
                <tbody>
                    {items.into_iter().map(|e| view! {
                        <tr data-testid="audit-row" data-action=e.action.clone()>
                            <td class="num">{e.seq}</td>
                            <td title=format::timestamp(e.at)>{format::ago(now, Some(e.at))}</td>
                            <td>{e.actor.clone()}</td>
                            <td><code>{e.action.clone()}</code></td>
                            <td>{e.target.clone().map(|t| {
                                let href = format!("/hosts/{t}");
                                view! { <Link href=href>{t}</Link> }
                            })}</td>
                            <td class="detail">{e.detail.clone()}</td>
                        </tr>
                    }.into_any()).collect_view()}
                </tbody>
            </table>
        </div>
    }.into_any()
}
