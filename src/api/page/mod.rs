//! The status page for the vendor's support staff (`GET /`, `GET /connectors/{id}`): server-rendered
//! HTML (minijinja, HTML auto-escaped: inventory names and Gradient's text stay text), inline-SVG
//! charts ([`chart`]), no external asset, usable without JavaScript; its three buttons — Sync now,
//! Test connection, Sync company accounts — post to the control API with a few lines of script.
//!
//! Access is the API's: over the unix socket the page is open; over TCP a browser signs in once
//! with the API token (`GET /login`, `POST /login` → a session cookie, `HttpOnly`,
//! `SameSite=Strict`, `Secure` unless the listener is loopback; `POST /logout`). The cookie never
//! holds the token: it is `EXPIRY.HMAC(process key, EXPIRY)`, the key random per process (a restart
//! signs everyone out), and it is accepted only for the page and its buttons' routes
//! ([`cookie_allows`]).

pub mod chart;
mod view;

use std::sync::OnceLock;

use axum::extract::{Form, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::api::ApiState;

/// The session cookie's name.
pub const COOKIE: &str = "gc_session";
/// How long a sign-in lasts.
const SESSION_SECS: i64 = 12 * 3600;

fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, text) in [
            ("layout.html", include_str!("templates/layout.html")),
            ("index.html", include_str!("templates/index.html")),
            ("connector.html", include_str!("templates/connector.html")),
            ("login.html", include_str!("templates/login.html")),
        ] {
            if let Err(e) = env.add_template(name, text) {
                tracing::error!(template = name, error = %e, "a built-in page template does not parse");
            }
        }
        env
    })
}

/// Renders template `name` with `ctx`, or a plain 500 naming the failure.
fn render(name: &str, ctx: minijinja::Value) -> Response {
    match templates().get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be rendered: {e}"),
        )
            .into_response(),
    }
}

/// The process's session key (random, never stored).
fn session_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        for chunk in k.chunks_mut(8) {
            chunk.copy_from_slice(&fastrand::u64(..).to_le_bytes());
        }
        let mut os = [0u8; 32];
        if std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut os))
            .is_ok()
        {
            for (a, b) in k.iter_mut().zip(os) {
                *a ^= b;
            }
        }
        k
    })
}

fn sign(expiry: i64) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(session_key())
        .expect("HMAC takes a key of any size");
    mac.update(format!("session:{expiry}").as_bytes());
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("{expiry}.{hex}")
}

/// A new session cookie's value.
fn new_session() -> String {
    sign(crate::time::now_ms() / 1000 + SESSION_SECS)
}

/// Whether the request carries a valid, unexpired session cookie.
pub fn has_session(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
    else {
        return false;
    };
    let Some(expiry) = value
        .split_once('.')
        .and_then(|(e, _)| e.parse::<i64>().ok())
    else {
        return false;
    };
    expiry > crate::time::now_ms() / 1000
        && bool::from(sign(expiry).as_bytes().ct_eq(value.as_bytes()))
}

/// The routes a session cookie opens (over TCP): the page itself and its buttons' routes, never
/// the rest of the API. A button's post must also say it comes from the page
/// (`X-Requested-With`), which a cross-site form cannot.
pub fn cookie_allows(method: &axum::http::Method, path: &str, headers: &HeaderMap) -> bool {
    let page = path == "/" || path.starts_with("/connectors/");
    if *method == axum::http::Method::GET && page {
        return true;
    }
    if *method != axum::http::Method::POST {
        return false;
    }
    let from_page = headers
        .get("x-requested-with")
        .is_some_and(|v| v == "gradient-connector-page");
    let button = path == "/v1/sync"
        || (path.starts_with("/v1/connectors/")
            && (path.ends_with("/verify") || path.ends_with("/accounts/sync")));
    button && from_page
}

/// The page's routes behind the API's access check, and the sign-in routes outside it.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(index))
        .route("/connectors/{id}", get(connector))
}

/// `GET /login` and `POST /login`: open to all (the form is how one gets in).
pub fn sign_in_routes(secure_cookie: bool) -> Router<ApiState> {
    Router::new()
        .route(
            "/login",
            get(login_form).post(move |state, form| login(state, form, secure_cookie)),
        )
        .route("/logout", post(logout))
}

/// The status page: connectors with their state and warnings, the last runs, the outbox.
#[utoipa::path(get, path = "/", tag = "page",
    responses(
        (status = 200, description = "the page", content_type = "text/html", body = String),
        (status = 303, description = "over TCP without a session: to `/login`"),
    ))]
pub(crate) async fn index(State(state): State<ApiState>) -> Response {
    match view::index(&state).await {
        Ok(ctx) => render("index.html", ctx),
        Err(e) => crate::api::routes::ApiFailure::from(e).into_response(),
    }
}

/// One connector's page: companies × services with the last pushed count, the change and a chart
/// of every push; unmapped accounts; the three buttons.
#[utoipa::path(get, path = "/connectors/{id}", tag = "page",
    params(("id" = String, Path, description = "the connector id")),
    responses(
        (status = 200, description = "the page", content_type = "text/html", body = String),
        (status = 303, description = "over TCP without a session: to `/login`"),
        (status = 404, description = "no such connector", content_type = "text/html", body = String),
    ))]
pub(crate) async fn connector(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    match view::connector(&state, &id).await {
        Ok(Some(ctx)) => render("connector.html", ctx),
        Ok(None) => (StatusCode::NOT_FOUND, Html(format!(
            "<!doctype html><title>not found</title><p>There is no connector {}. <a href=\"/\">All connectors</a></p>",
            view::escape_html(&id)
        )))
            .into_response(),
        Err(e) => crate::api::routes::ApiFailure::from(e).into_response(),
    }
}

/// The sign-in form (over TCP; over the unix socket the page needs none: to `/`).
#[utoipa::path(get, path = "/login", tag = "page", security(()),
    responses(
        (status = 200, description = "the form", content_type = "text/html", body = String),
        (status = 303, description = "no sign-in needed: to `/`"),
    ))]
pub(crate) async fn login_form(State(state): State<ApiState>) -> Response {
    if state.token.is_none() {
        return Redirect::to("/").into_response();
    }
    render("login.html", minijinja::context! { signed_in => false })
}

/// `POST /login`'s form.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct LoginForm {
    /// The control API's token.
    token: String,
}

/// Signs in: the right token gets the session cookie and a redirect to `/`; a wrong one the form
/// again (401).
#[utoipa::path(post, path = "/login", tag = "page", security(()),
    request_body(content = LoginForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "signed in: `Set-Cookie` and a redirect to `/`"),
        (status = 401, description = "not the token: the form again", content_type = "text/html", body = String),
    ))]
#[allow(dead_code)]
pub(crate) fn login_doc() {}

async fn login(
    State(state): State<ApiState>,
    Form(form): Form<LoginForm>,
    secure: bool,
) -> Response {
    let Some(want) = &state.token else {
        return Redirect::to("/").into_response();
    };
    let given = form.token.trim();
    if !bool::from(given.as_bytes().ct_eq(want.expose_secret().as_bytes())) {
        let mut r = render(
            "login.html",
            minijinja::context! { signed_in => false, error => "That is not the API token." },
        );
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECS}{}",
        new_session(),
        if secure { "; Secure" } else { "" }
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

/// Signs out: the cookie cleared, a redirect to `/login`.
#[utoipa::path(post, path = "/logout", tag = "page", security(()),
    responses((status = 303, description = "signed out")))]
pub(crate) async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_cookie_is_signed_and_expires_and_opens_only_the_page_and_its_buttons() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("x=1; {COOKIE}={}", new_session()).parse().unwrap(),
        );
        assert!(has_session(&h));
        let forged = format!(
            "{COOKIE}={}.{}",
            crate::time::now_ms() / 1000 + 99,
            "0".repeat(64)
        );
        h.insert(header::COOKIE, forged.parse().unwrap());
        assert!(!has_session(&h));
        h.insert(
            header::COOKIE,
            format!("{COOKIE}={}", sign(1)).parse().unwrap(),
        );
        assert!(!has_session(&h), "expired");

        let get = axum::http::Method::GET;
        let post = axum::http::Method::POST;
        let none = HeaderMap::new();
        let mut page = HeaderMap::new();
        page.insert(
            "x-requested-with",
            "gradient-connector-page".parse().unwrap(),
        );
        assert!(cookie_allows(&get, "/", &none));
        assert!(cookie_allows(&get, "/connectors/msp-1", &none));
        assert!(cookie_allows(&post, "/v1/sync", &page));
        assert!(cookie_allows(&post, "/v1/connectors/a/verify", &page));
        assert!(cookie_allows(
            &post,
            "/v1/connectors/a/accounts/sync",
            &page
        ));
        assert!(
            !cookie_allows(&post, "/v1/sync", &none),
            "a cross-site form"
        );
        assert!(!cookie_allows(&get, "/v1/status", &page));
        assert!(!cookie_allows(&post, "/v1/inventory", &page));
        assert!(!cookie_allows(
            &axum::http::Method::PUT,
            "/v1/connectors/a/token",
            &page
        ));
        assert!(!cookie_allows(
            &axum::http::Method::DELETE,
            "/v1/connectors/a",
            &page
        ));
    }
}
