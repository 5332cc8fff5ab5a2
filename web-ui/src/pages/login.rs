//! Login: an API key pasted by the operator, kept in this tab's sessionStorage. In demo
//! mode (the console marks index.html) a link fetches the admin key from the console.

use leptos::prelude::*;

use crate::api;
use crate::app::Auth;

#[derive(Debug, serde::Deserialize)]
struct DemoLogin {
    key: String,
}

fn demo_mode() -> bool {
    document()
        .query_selector("meta[name=edgefleet-demo]")
        .ok()
        .flatten()
        .is_some()
}

/// Checks `key` against the API and keeps it when it works.
async fn try_key(key: String) -> Result<(), String> {
    let key = key.trim().to_string();
    if key.is_empty() {
        return Err("Paste an API key first.".into());
    }
    let response = api::send("GET", "/api/fleet/summary", None, Some(&key))
        .await
        .map_err(|e| e.to_string())?;
    match response.status() {
        200 => {
            api::set_key(Some(&key));
            Ok(())
        }
        401 => Err("The console does not know this key.".into()),
        429 => Err("Too many failed attempts from this address; wait a minute.".into()),
        s => Err(format!("The console answered HTTP {s}.")),
    }
}

#[component]
pub fn LoginPage() -> impl IntoView {
    let auth = expect_context::<Auth>();
    let key = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let finish = move |result: Result<(), String>| {
        busy.set(false);
        match result {
            Ok(()) => auth.logged_in.set(true),
            Err(e) => error.set(Some(e)),
        }
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        busy.set(true);
        error.set(None);
        let k = key.get_untracked();
        leptos::task::spawn_local(async move { finish(try_key(k).await) });
    };
    let demo = move |_| {
        busy.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            let result = async {
                let response = api::send("POST", "/demo/login", None, None)
                    .await
                    .map_err(|e| e.to_string())?;
                let body = api::text(&response).await.map_err(|e| e.to_string())?;
                if response.status() != 200 {
                    return Err(format!(
                        "The console refused the demo login (HTTP {}).",
                        response.status()
                    ));
                }
                let login: DemoLogin =
                    serde_json::from_str(&body).map_err(|e| format!("demo login: {e}"))?;
                try_key(login.key).await
            }
            .await;
            finish(result)
        });
    };
    view! {
        <div class="login">
            <form class="panel" on:submit=submit>
                <h1>"EdgeFleet"</h1>
                <p class="muted">
                    "Log in with an API key. The console writes the first admin key to "
                    <code>"<data_dir>/admin.key"</code> "; "
                    <code>"edgefleet keys create"</code> " makes more."
                </p>
                <label for="api-key">"API key"</label>
                <input
                    id="api-key"
                    type="password"
                    autocomplete="off"
                    placeholder="paste the key"
                    prop:value=move || key.get()
                    on:input=move |ev| key.set(event_target_value(&ev))
                    autofocus
                />
                <button type="submit" class="primary" disabled=move || busy.get()>
                    "Log in"
                </button>
                {demo_mode()
                    .then(|| {
                        view! {
                            <p>
                                <a
                                    href="#"
                                    data-testid="demo-login"
                                    on:click=move |ev: leptos::ev::MouseEvent| {
                                        ev.prevent_default();
                                        demo(ev)
                                    }
                                >
                                    "Log in to the demo"
                                </a>
                                <span class="muted">" (demo mode, this machine only)"</span>
                            </p>
                        }
                    })}
                {move || error.get().map(|e| view! { <div class="error" role="alert">{e}</div> })}
                <p class="muted small">"The key stays in this browser tab (sessionStorage) until you log out or close it."</p>
            </form>
        </div>
    }
}
