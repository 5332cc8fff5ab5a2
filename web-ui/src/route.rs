//! The client-side router: the current path and query in a signal, moved with the
//! history API, so every page is a real URL the console's SPA fallback serves.

use leptos::prelude::*;

/// Where the browser is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub path: String,
    /// `location.search`, with its `?` (empty when there is none).
    pub search: String,
}

/// The pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    Hosts,
    Host { id: String },
    Audit,
    Packages,
    Groups,
    Rollouts,
    Rollout { id: String },
    NotFound,
}

impl Loc {
    fn current() -> Loc {
        let location = window().location();
        Loc {
            path: location.pathname().unwrap_or_else(|_| "/".into()),
            search: location.search().unwrap_or_default(),
        }
    }

    pub fn page(&self) -> Page {
        let parts: Vec<&str> = self.path.split('/').filter(|p| !p.is_empty()).collect();
        match parts.as_slice() {
            [] | ["hosts"] => Page::Hosts,
            ["hosts", id] => Page::Host {
                id: crate::query::decode(id),
            },
            ["audit"] => Page::Audit,
            ["packages"] => Page::Packages,
            ["groups"] => Page::Groups,
            ["rollouts"] => Page::Rollouts,
            ["rollouts", id] => Page::Rollout {
                id: crate::query::decode(id),
            },
            _ => Page::NotFound,
        }
    }

    /// The value of one query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        crate::query::pairs(&self.search)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// The router in the context of every page.
#[derive(Debug, Clone, Copy)]
pub struct Router {
    pub loc: RwSignal<Loc>,
}

impl Router {
    pub fn install() -> Router {
        let router = Router {
            loc: RwSignal::new(Loc::current()),
        };
        let handle = window_event_listener(leptos::ev::popstate, move |_| {
            router.loc.set(Loc::current());
        });
        // The router lives as long as the page.
        std::mem::forget(handle);
        provide_context(router);
        router
    }

    /// Goes to `url` (path and query). `replace` rewrites the current history entry, for
    /// changes as the user types.
    pub fn go(&self, url: &str, replace: bool) {
        let history = window().history().expect("browsers have a history");
        let _ = if replace {
            history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(url))
        } else {
            history.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(url))
        };
        let next = Loc::current();
        if next != self.loc.get_untracked() {
            self.loc.set(next);
        }
        if !replace {
            window().scroll_to_with_x_and_y(0.0, 0.0);
        }
    }
}

pub fn use_router() -> Router {
    expect_context::<Router>()
}

/// A link that moves with the history API; modified clicks (new tab) stay the browser's.
#[component]
pub fn Link(
    #[prop(into)] href: Signal<String>,
    #[prop(optional, into)] class: Option<String>,
    children: Children,
) -> impl IntoView {
    let router = use_router();
    let on_click = move |ev: leptos::ev::MouseEvent| {
        if ev.button() == 0 && !(ev.ctrl_key() || ev.meta_key() || ev.shift_key() || ev.alt_key()) {
            ev.prevent_default();
            router.go(&href.get_untracked(), false);
        }
    };
    view! {
        <a href=move || href.get() class=class on:click=on_click>
            {children()}
        </a>
    }
}
