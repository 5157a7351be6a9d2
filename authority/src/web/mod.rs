//! The staff web page, served by `dp3t-authority` under `/staff`.
//!
//! Server-rendered HTML forms that work without JavaScript (one small script of our own
//! shows a Print button). Security measures, each for a reason:
//!
//! * **Sign-in in two steps**: password (argon2id), then a TOTP code; the session id is
//!   replaced after each step (no fixation), and both steps are throttled per name.
//! * **Cookies**: `__Host-` prefixed, `Secure`, `HttpOnly`, `SameSite=Strict`, `Path=/`;
//!   the server stores only the SHA-256 of the session id.
//! * **CSRF**: every form carries the session's synchronizer token (the sign-in form a
//!   token bound to a pre-session cookie), compared in constant time; requests whose
//!   `Origin` is another host, or whose `Sec-Fetch-Site` says cross-site, are refused.
//! * **Headers**: a strict Content-Security-Policy (`default-src 'none'`, styles and
//!   scripts only from this origin, no inline code, `frame-ancestors 'none'`,
//!   `form-action 'self'`), `no-store` caching, `Referrer-Policy: same-origin` (with
//!   `no-referrer` browsers send `Origin: null`, which the origin check must refuse), no
//!   sniffing. No external
//!   assets: the stylesheet and script are compiled into the binary.
//! * **Nothing about patients**: the only input when creating a code is the onset date.

pub mod i18n;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::{AppState, CreateError};
use crate::codes::Code;
use crate::config::MAX_ONSET_DAYS_BACK;
use crate::date::{day_of, format_iso_date, parse_iso_date};
use crate::db::{stage, SessionRow};
use crate::totp;
use crate::unix_now;
use i18n::Messages;

/// The Content-Security-Policy of every answer.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// Seconds allowed between the password step and the TOTP step.
pub const SECOND_FACTOR_SECONDS: u64 = 300;

const STYLE: &str = include_str!("../../static/style.css");
const SCRIPT: &str = include_str!("../../static/print.js");
const LANG_COOKIE: &str = "dp3t-lang";

/// Escape text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn eq_ct(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Cookie names: with the `__Host-` prefix when cookies are secure.
fn session_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-dp3t-session"
    } else {
        "dp3t-session"
    }
}

fn login_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-dp3t-login"
    } else {
        "dp3t-login"
    }
}

/// The value of cookie `name` in the request.
pub fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all("cookie")
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether a state-changing request comes from this site: `Sec-Fetch-Site` (when sent)
/// must be `same-origin` or `none`, and `Origin` (when sent) must name this host.
pub fn same_origin(req: &HttpRequest) -> bool {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        if site != "same-origin" && site != "none" {
            return false;
        }
    }
    if let Some(origin) = header("origin") {
        let host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        let info = req.connection_info();
        if !host.eq_ignore_ascii_case(info.host()) {
            return false;
        }
    }
    true
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("location", to))
        .finish()
}

fn lang_of<'a>(state: &'a AppState, req: &HttpRequest) -> Messages<'a> {
    let chosen = cookie(req, LANG_COOKIE);
    let accept = req
        .headers()
        .get("accept-language")
        .and_then(|v| v.to_str().ok());
    let tag = state
        .catalogs
        .negotiate(chosen.as_deref(), accept)
        .to_owned();
    state.catalogs.get(&tag)
}

/// The page frame. `user` and `csrf` are set on signed-in pages (for the sign-out form).
fn page(
    m: &Messages<'_>,
    state: &AppState,
    title: &str,
    user: Option<(&str, &str)>,
    body: &str,
) -> String {
    let langs: String = state
        .catalogs
        .tags()
        .map(|t| {
            let name = state.catalogs.get(t).t("lang_name");
            if t == m.lang {
                format!("<strong>{}</strong>", escape(&name))
            } else {
                format!(
                    "<a href=\"/staff/lang/{t}\" hreflang=\"{t}\" lang=\"{t}\">{}</a>",
                    escape(&name)
                )
            }
        })
        .collect::<Vec<_>>()
        .join(" · ");
    let account = match user {
        Some((name, csrf)) => format!(
            "<span>{}</span> <nav><a href=\"/staff\">{}</a> · <a href=\"/staff/audit\">{}</a></nav> \
             <form method=\"post\" action=\"/staff/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button class=\"link\" type=\"submit\" id=\"sign-out\">{}</button></form>",
            escape(&m.t1("signed_in_as", name)),
            escape(&m.t("create_title")),
            escape(&m.t("audit_link")),
            escape(csrf),
            escape(&m.t("sign_out"))
        ),
        None => String::new(),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} — {app}</title><link rel=\"stylesheet\" href=\"/static/style.css\">\
         <script src=\"/static/print.js\" defer></script></head><body>\
         <header><h1>{app}</h1><div>{account}</div><div class=\"noprint\" aria-label=\"{language}\">{langs}</div></header>\
         <main>{body}</main></body></html>\n",
        lang = m.lang,
        title = escape(title),
        app = escape(&m.t("app_title")),
        language = escape(&m.t("language")),
    )
}

fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body)
}

fn notice(class: &str, text: &str) -> String {
    format!("<p class=\"{class}\" role=\"status\">{}</p>", escape(text))
}

/// The signed-in or half-signed-in session of the request, with its id hash.
async fn session_of(state: &AppState, req: &HttpRequest) -> Option<([u8; 32], SessionRow)> {
    let id = cookie(req, session_cookie(state.config.cookie_secure))?;
    let hash = sha256(&id);
    match state.db.session(&hash, unix_now()).await {
        Ok(Some(s)) => Some((hash, s)),
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            None
        }
    }
}

/// Start a session: store it, and return the `Set-Cookie` value.
async fn new_session(
    state: &AppState,
    username: &str,
    stage: i64,
    lifetime: u64,
) -> Option<(String, String)> {
    let id = random_token();
    let row = SessionRow {
        username: username.to_owned(),
        stage,
        csrf_token: random_token(),
        expires_at: unix_now() + lifetime,
    };
    if let Err(e) = state.db.insert_session(&sha256(&id), &row).await {
        tracing::error!(error = %e, "storing a session failed");
        return None;
    }
    let secure = state.config.cookie_secure;
    Some((
        set_cookie(session_cookie(secure), &id, lifetime, secure),
        row.csrf_token,
    ))
}

fn internal(m: &Messages<'_>, state: &AppState) -> HttpResponse {
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        page(m, state, "Error", None, &notice("error", "Internal error.")),
    )
}

fn forbidden(m: &Messages<'_>, state: &AppState) -> HttpResponse {
    let body = format!(
        "{}<p><a href=\"/staff\">{}</a></p>",
        notice("error", &m.t("forbidden")),
        escape(&m.t("back"))
    );
    html(
        StatusCode::FORBIDDEN,
        page(m, state, &m.t("app_title"), None, &body),
    )
}

// ---- sign-in ----

fn login_form(m: &Messages<'_>, state: &AppState, token: &str, message: Option<&str>) -> String {
    let body = format!(
        "<section><h2>{title}</h2>{msg}<form method=\"post\" action=\"/staff/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
         <label for=\"username\">{user}</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\
         <label for=\"password\">{pw}</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <div><button type=\"submit\" id=\"sign-in\">{go}</button></div></form>{oidc}</section>",
        oidc = state
            .oidc
            .as_ref()
            .map(|o| format!(
                "<p><a href=\"/staff/oidc/start\" id=\"oidc\">{}</a></p>",
                escape(&m.t1("oidc_sign_in", o.display_name()))
            ))
            .unwrap_or_default(),
        title = escape(&m.t("sign_in_title")),
        msg = message.map(|t| notice("error", t)).unwrap_or_default(),
        token = escape(token),
        user = escape(&m.t("username")),
        pw = escape(&m.t("password")),
        go = escape(&m.t("continue")),
    );
    page(m, state, &m.t("sign_in_title"), None, &body)
}

fn login_page(
    m: &Messages<'_>,
    state: &AppState,
    status: StatusCode,
    message: Option<&str>,
) -> HttpResponse {
    let token = random_token();
    let secure = state.config.cookie_secure;
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "set-cookie",
            set_cookie(login_cookie(secure), &token, 1800, secure),
        ))
        .body(login_form(m, state, &token, message))
}

/// `GET /staff/login`.
async fn login_get(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let m = lang_of(&state, &req);
    login_page(&m, &state, StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    csrf: String,
}

/// `POST /staff/login`: the password step.
async fn login_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let m = lang_of(&state, &req);
    let secure = state.config.cookie_secure;
    let bound = cookie(&req, login_cookie(secure));
    if !same_origin(&req) || !bound.is_some_and(|b| eq_ct(&b, &form.csrf)) {
        return forbidden(&m, &state);
    }
    let now = unix_now();
    let name = form.username.trim();
    if !state.throttle.allowed(name, now) {
        return login_page(
            &m,
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&m.t("throttled")),
        );
    }
    let account = match state.db.staff(name).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "staff lookup failed");
            return internal(&m, &state);
        }
    };
    let password = form.password.clone();
    let check_state = state.clone();
    let account_for_check = account.clone();
    // argon2 is deliberately slow: keep it off the async workers.
    let ok = web::block(move || {
        check_state
            .passwords
            .check(account_for_check.as_ref(), &password)
    })
    .await
    .unwrap_or(false);
    if !ok {
        state.throttle.failed(name, now);
        tracing::info!("staff sign-in: wrong name or password");
        return login_page(
            &m,
            &state,
            StatusCode::UNAUTHORIZED,
            Some(&m.t("login_failed")),
        );
    }
    let Some((cookie_value, _)) =
        new_session(&state, name, stage::SECOND_FACTOR, SECOND_FACTOR_SECONDS).await
    else {
        return internal(&m, &state);
    };
    HttpResponse::SeeOther()
        .insert_header(("location", "/staff/totp"))
        .append_header(("set-cookie", cookie_value))
        .append_header((
            "set-cookie",
            set_cookie(login_cookie(secure), "", 0, secure),
        ))
        .finish()
}

fn totp_form(m: &Messages<'_>, state: &AppState, csrf: &str, message: Option<&str>) -> String {
    let body = format!(
        "<section><h2>{title}</h2>{msg}<form method=\"post\" action=\"/staff/totp\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"totp\">{label}</label><input id=\"totp\" name=\"totp\" inputmode=\"numeric\" \
         pattern=\"[0-9]{{6}}\" maxlength=\"6\" autocomplete=\"one-time-code\" required autofocus>\
         <div><button type=\"submit\" id=\"verify\">{go}</button></div></form></section>",
        title = escape(&m.t("totp_title")),
        msg = message.map(|t| notice("error", t)).unwrap_or_default(),
        csrf = escape(csrf),
        label = escape(&m.t("totp_label")),
        go = escape(&m.t("continue")),
    );
    page(m, state, &m.t("totp_title"), None, &body)
}

/// `GET /staff/totp`.
async fn totp_get(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let m = lang_of(&state, &req);
    match session_of(&state, &req).await {
        Some((_, s)) if s.stage == stage::SECOND_FACTOR => {
            html(StatusCode::OK, totp_form(&m, &state, &s.csrf_token, None))
        }
        Some(_) => redirect("/staff"),
        None => redirect("/staff/login"),
    }
}

#[derive(Deserialize)]
struct TotpForm {
    totp: String,
    csrf: String,
}

/// `POST /staff/totp`: the second factor.
async fn totp_post(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<TotpForm>,
) -> HttpResponse {
    let m = lang_of(&state, &req);
    let Some((hash, s)) = session_of(&state, &req).await else {
        return login_page(&m, &state, StatusCode::UNAUTHORIZED, Some(&m.t("expired")));
    };
    if s.stage != stage::SECOND_FACTOR {
        return redirect("/staff");
    }
    if !same_origin(&req) || !eq_ct(&s.csrf_token, &form.csrf) {
        return forbidden(&m, &state);
    }
    let now = unix_now();
    if !state.throttle.allowed(&s.username, now) {
        return html(
            StatusCode::TOO_MANY_REQUESTS,
            totp_form(&m, &state, &s.csrf_token, Some(&m.t("throttled"))),
        );
    }
    let account = match state.db.staff(&s.username).await {
        Ok(Some(a)) if !a.disabled => a,
        Ok(_) => return login_page(&m, &state, StatusCode::UNAUTHORIZED, Some(&m.t("expired"))),
        Err(e) => {
            tracing::error!(error = %e, "staff lookup failed");
            return internal(&m, &state);
        }
    };
    let step = totp::verify(&account.totp_secret, &form.totp, now);
    let fresh = match step {
        Some(step) => match state.db.use_totp_step(&s.username, step).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, "recording the TOTP step failed");
                return internal(&m, &state);
            }
        },
        None => false,
    };
    if !fresh {
        state.throttle.failed(&s.username, now);
        tracing::info!("staff sign-in: wrong or reused second factor");
        return html(
            StatusCode::UNAUTHORIZED,
            totp_form(&m, &state, &s.csrf_token, Some(&m.t("totp_failed"))),
        );
    }
    state.throttle.reset(&s.username);
    if let Err(e) = state.db.delete_session(&hash).await {
        tracing::error!(error = %e, "ending the half session failed");
    }
    let lifetime = u64::from(state.config.session_minutes) * 60;
    let Some((cookie_value, _)) =
        new_session(&state, &s.username, stage::SIGNED_IN, lifetime).await
    else {
        return internal(&m, &state);
    };
    tracing::info!(user = %s.username, "staff signed in");
    HttpResponse::SeeOther()
        .insert_header(("location", "/staff"))
        .insert_header(("set-cookie", cookie_value))
        .finish()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// `POST /staff/logout`.
async fn logout(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let m = lang_of(&state, &req);
    let Some((hash, s)) = session_of(&state, &req).await else {
        return redirect("/staff/login");
    };
    if !same_origin(&req) || !eq_ct(&s.csrf_token, &form.csrf) {
        return forbidden(&m, &state);
    }
    if let Err(e) = state.db.delete_session(&hash).await {
        tracing::error!(error = %e, "ending a session failed");
    }
    let secure = state.config.cookie_secure;
    HttpResponse::SeeOther()
        .insert_header(("location", "/staff/login"))
        .insert_header((
            "set-cookie",
            set_cookie(session_cookie(secure), "", 0, secure),
        ))
        .finish()
}

// ---- OpenID Connect ----

fn oidc_cookie(secure: bool) -> &'static str {
    if secure {
        "__Host-dp3t-oidc"
    } else {
        "dp3t-oidc"
    }
}

/// The audit-log name of a session's user: local accounts are `staff:<name>`, provider
/// accounts already carry their `oidc:` prefix (local names cannot contain `:`).
pub fn actor(username: &str) -> String {
    if username.contains(':') {
        username.to_owned()
    } else {
        format!("staff:{username}")
    }
}

/// `GET /staff/oidc/start`: send the browser to the provider.
async fn oidc_start(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let m = lang_of(&state, &req);
    let Some(oidc) = state.oidc.as_ref() else {
        return HttpResponse::NotFound().finish();
    };
    let started = oidc.start();
    let now = unix_now();
    if let Err(e) = state
        .db
        .insert_oidc_login(
            &sha256(&started.state),
            &started.pkce_verifier,
            &started.nonce,
            now + crate::oidc::LOGIN_SECONDS,
        )
        .await
    {
        tracing::error!(error = %e, "storing an OpenID Connect sign-in failed");
        return internal(&m, &state);
    }
    let secure = state.config.cookie_secure;
    // SameSite=Lax: the provider's redirect back is a cross-site navigation, on which
    // Strict cookies would not be sent.
    let cookie = format!(
        "{}={}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{}",
        oidc_cookie(secure),
        started.state,
        crate::oidc::LOGIN_SECONDS,
        if secure { "; Secure" } else { "" }
    );
    HttpResponse::SeeOther()
        .insert_header(("location", started.authorize_url))
        .insert_header(("set-cookie", cookie))
        .finish()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /staff/oidc/callback`: finish the sign-in.
async fn oidc_callback(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
) -> HttpResponse {
    let m = lang_of(&state, &req);
    let Some(oidc) = state.oidc.as_ref() else {
        return HttpResponse::NotFound().finish();
    };
    let secure = state.config.cookie_secure;
    let failed = |why: &str| {
        tracing::info!(reason = why, "OpenID Connect sign-in failed");
        login_page(
            &m,
            &state,
            StatusCode::UNAUTHORIZED,
            Some(&m.t("oidc_failed")),
        )
    };
    if query.error.is_some() {
        return failed("the provider answered with an error");
    }
    let (Some(code), Some(st)) = (query.code.as_deref(), query.state.as_deref()) else {
        return failed("code or state missing");
    };
    // The state must be the one this browser was given (login CSRF).
    if !cookie(&req, oidc_cookie(secure)).is_some_and(|c| eq_ct(&c, st)) {
        return failed("state does not match the browser's cookie");
    }
    let pending = match state.db.take_oidc_login(&sha256(st), unix_now()).await {
        Ok(Some(p)) => p,
        Ok(None) => return failed("unknown, used or expired state"),
        Err(e) => {
            tracing::error!(error = %e, "reading an OpenID Connect sign-in failed");
            return internal(&m, &state);
        }
    };
    let name = match oidc.finish(code, &pending.0, &pending.1).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "OpenID Connect code exchange failed");
            return failed("code exchange or ID token refused");
        }
    };
    let lifetime = u64::from(state.config.session_minutes) * 60;
    let Some((cookie_value, _)) = new_session(&state, &name, stage::SIGNED_IN, lifetime).await
    else {
        return internal(&m, &state);
    };
    tracing::info!(user = %name, "staff signed in through OpenID Connect");
    // A page of our own moves on to /staff: a redirect would continue the provider's
    // cross-site navigation, on which the SameSite=Strict session cookie is not sent.
    let body = format!(
        "<section><p><a href=\"/staff\" id=\"continue\">{}</a></p></section>",
        escape(&m.t("continue"))
    );
    let html_page = page(&m, &state, &m.t("app_title"), None, &body).replacen(
        "<head>",
        "<head><meta http-equiv=\"refresh\" content=\"0;url=/staff\">",
        1,
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .append_header(("set-cookie", cookie_value))
        .append_header((
            "set-cookie",
            format!(
                "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
                oidc_cookie(secure),
                if secure { "; Secure" } else { "" }
            ),
        ))
        .body(html_page)
}

// ---- signed-in pages ----

/// The signed-in session, or the answer to give instead.
async fn signed_in(state: &AppState, req: &HttpRequest) -> Result<SessionRow, HttpResponse> {
    match session_of(state, req).await {
        Some((_, s)) if s.stage == stage::SIGNED_IN => Ok(s),
        Some(_) => Err(redirect("/staff/totp")),
        None => Err(redirect("/staff/login")),
    }
}

fn format_time(t: u64) -> String {
    let secs = t % 86_400;
    format!(
        "{} {:02}:{:02}",
        format_iso_date(day_of(t)),
        secs / 3600,
        secs % 3600 / 60
    )
}

async fn dashboard(
    state: &AppState,
    m: &Messages<'_>,
    s: &SessionRow,
    message: Option<(&str, String)>,
    status: StatusCode,
) -> HttpResponse {
    let now = unix_now();
    let counts = match state.db.day_counts(now).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "counting codes failed");
            return internal(m, state);
        }
    };
    let today = day_of(now);
    let options: String = (0..=MAX_ONSET_DAYS_BACK.min(today))
        .map(|back| {
            let day = today - back;
            let label = match back {
                0 => m.t("today"),
                n => m.t1("days_ago", &n.to_string()),
            };
            format!(
                "<option value=\"{d}\">{d} ({})</option>",
                escape(&label),
                d = format_iso_date(day)
            )
        })
        .collect();
    let csrf = escape(&s.csrf_token);
    let body = format!(
        "{msg}<section><h2>{create}</h2><p>{create_help}</p>\
         <form method=\"post\" action=\"/staff/codes\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"onset\">{onset}</label><select id=\"onset\" name=\"onset\" required>\
         <option value=\"\">{choose}</option>{options}</select>\
         <div><button type=\"submit\" id=\"create\">{create_button}</button></div></form></section>\
         <section><h2>{revoke}</h2><p>{revoke_help}</p>\
         <form method=\"post\" action=\"/staff/revoke\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label for=\"revoke-code\">{revoke_label}</label><input id=\"revoke-code\" name=\"code\" inputmode=\"numeric\" \
         autocomplete=\"off\" maxlength=\"20\" placeholder=\"0000 0000 0000\" required>\
         <div><button type=\"submit\" id=\"revoke\">{revoke_button}</button></div></form></section>\
         <section><h2>{counts}</h2><table id=\"counts\">\
         <tr><th>{c1}</th><td class=\"n\" id=\"count-created\">{n1}</td></tr>\
         <tr><th>{c2}</th><td class=\"n\" id=\"count-exchanged\">{n2}</td></tr>\
         <tr><th>{c3}</th><td class=\"n\" id=\"count-revoked\">{n3}</td></tr>\
         <tr><th>{c4}</th><td class=\"n\" id=\"count-live\">{n4}</td></tr></table></section>",
        msg = message.map(|(class, text)| notice(class, &text)).unwrap_or_default(),
        create = escape(&m.t("create_title")),
        create_help = escape(&m.t("create_help")),
        onset = escape(&m.t("onset_label")),
        choose = escape(&m.t("onset_choose")),
        create_button = escape(&m.t("create_button")),
        revoke = escape(&m.t("revoke_title")),
        revoke_help = escape(&m.t("revoke_help")),
        revoke_label = escape(&m.t("revoke_label")),
        revoke_button = escape(&m.t("revoke_button")),
        counts = escape(&m.t("counts_title")),
        c1 = escape(&m.t("counts_created")),
        c2 = escape(&m.t("counts_exchanged")),
        c3 = escape(&m.t("counts_revoked")),
        c4 = escape(&m.t("counts_live")),
        n1 = counts.created,
        n2 = counts.exchanged,
        n3 = counts.revoked,
        n4 = counts.live,
    );
    html(
        status,
        page(
            m,
            state,
            &m.t("app_title"),
            Some((&s.username, &s.csrf_token)),
            &body,
        ),
    )
}

/// `GET /staff`.
async fn home(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let m = lang_of(&state, &req);
    match signed_in(&state, &req).await {
        Ok(s) => dashboard(&state, &m, &s, None, StatusCode::OK).await,
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct CreateForm {
    onset: String,
    csrf: String,
}

/// `POST /staff/codes`: create a code and show it.
async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<CreateForm>,
) -> HttpResponse {
    let m = lang_of(&state, &req);
    let s = match signed_in(&state, &req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !same_origin(&req) || !eq_ct(&s.csrf_token, &form.csrf) {
        return forbidden(&m, &state);
    }
    let now = unix_now();
    let Some(onset) = parse_iso_date(&form.onset) else {
        return dashboard(
            &state,
            &m,
            &s,
            Some(("error", m.t("onset_error"))),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    let code = match state.create_codes(onset, 1, &actor(&s.username), now).await {
        Ok(mut c) => match c.pop() {
            Some(c) => c,
            None => return internal(&m, &state),
        },
        Err(CreateError::Onset) => {
            return dashboard(
                &state,
                &m,
                &s,
                Some(("error", m.t("onset_error"))),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
        Err(CreateError::Internal(e)) => {
            tracing::error!(error = %e, "creating a code failed");
            return internal(&m, &state);
        }
    };
    let until = now + u64::from(state.config.code_validity_hours) * 3600;
    let body = format!(
        "<section><h2>{title}</h2><p class=\"noprint\">{help}</p>\
         <p class=\"code\" id=\"code\" aria-label=\"{title}\">{code}</p>\
         <p id=\"code-onset\">{onset}</p><p id=\"code-valid\">{valid}</p>\
         <p class=\"noprint\"><button type=\"button\" id=\"print\" hidden>{print}</button> \
         <a href=\"/staff\" id=\"another\">{another}</a></p></section>",
        title = escape(&m.t("code_title")),
        help = escape(&m.t("code_help")),
        code = escape(&code.grouped()),
        onset = escape(&m.t1("code_onset", &format_iso_date(onset))),
        valid = escape(&m.t1("code_valid_until", &format_time(until))),
        print = escape(&m.t("print")),
        another = escape(&m.t("another")),
    );
    html(
        StatusCode::OK,
        page(
            &m,
            &state,
            &m.t("code_title"),
            Some((&s.username, &s.csrf_token)),
            &body,
        ),
    )
}

#[derive(Deserialize)]
struct RevokeForm {
    code: String,
    csrf: String,
}

/// `POST /staff/revoke`.
async fn revoke(
    state: web::Data<AppState>,
    req: HttpRequest,
    form: web::Form<RevokeForm>,
) -> HttpResponse {
    let m = lang_of(&state, &req);
    let s = match signed_in(&state, &req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    if !same_origin(&req) || !eq_ct(&s.csrf_token, &form.csrf) {
        return forbidden(&m, &state);
    }
    let done = match Code::parse(&form.code) {
        Some(code) => match state
            .revoke_code(&code, &actor(&s.username), unix_now())
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "revoking a code failed");
                return internal(&m, &state);
            }
        },
        None => false,
    };
    let (class, text, status) = if done {
        ("notice", m.t("revoked"), StatusCode::OK)
    } else {
        ("error", m.t("revoke_none"), StatusCode::NOT_FOUND)
    };
    dashboard(&state, &m, &s, Some((class, text)), status).await
}

/// `GET /staff/audit`: who created or revoked how many codes, per hour, last 7 days.
async fn audit(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let m = lang_of(&state, &req);
    let s = match signed_in(&state, &req).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let rows = match state
        .db
        .audit_since(unix_now().saturating_sub(7 * 86_400))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "reading the audit log failed");
            return internal(&m, &state);
        }
    };
    let lines: String = rows
        .iter()
        .rev()
        .map(|r| {
            let action = match r.action.as_str() {
                "create" => m.t("action_create"),
                "revoke" => m.t("action_revoke"),
                other => other.to_owned(),
            };
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                escape(&format_time(r.hour)),
                escape(&r.actor),
                escape(&action),
                r.count
            )
        })
        .collect();
    let body = format!(
        "<section><h2>{title}</h2><table id=\"audit\"><tr><th>{h}</th><th>{a}</th><th>{w}</th><th>{c}</th></tr>{lines}</table></section>",
        title = escape(&m.t("audit_title")),
        h = escape(&m.t("audit_hour")),
        a = escape(&m.t("audit_actor")),
        w = escape(&m.t("audit_action")),
        c = escape(&m.t("audit_count")),
    );
    html(
        StatusCode::OK,
        page(
            &m,
            &state,
            &m.t("audit_title"),
            Some((&s.username, &s.csrf_token)),
            &body,
        ),
    )
}

/// `GET /staff/lang/{tag}`: remember the language choice, back to the page.
async fn set_lang(state: web::Data<AppState>, path: web::Path<String>) -> HttpResponse {
    let tag = path.into_inner();
    if !state.catalogs.has(&tag) {
        return HttpResponse::NotFound().finish();
    }
    HttpResponse::SeeOther()
        .insert_header(("location", "/staff"))
        .insert_header((
            "set-cookie",
            format!(
                "{LANG_COOKIE}={tag}; Path=/; Max-Age=31536000; SameSite=Lax{}",
                if state.config.cookie_secure {
                    "; Secure"
                } else {
                    ""
                }
            ),
        ))
        .finish()
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=3600"))
        .body(STYLE)
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=3600"))
        .body(SCRIPT)
}

/// Register the staff routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(|| async { redirect("/staff") }))
        .route("/staff", web::get().to(home))
        .route("/staff/login", web::get().to(login_get))
        .route("/staff/login", web::post().to(login_post))
        .route("/staff/totp", web::get().to(totp_get))
        .route("/staff/totp", web::post().to(totp_post))
        .route("/staff/logout", web::post().to(logout))
        .route("/staff/oidc/start", web::get().to(oidc_start))
        .route("/staff/oidc/callback", web::get().to(oidc_callback))
        .route("/staff/codes", web::post().to(create))
        .route("/staff/revoke", web::post().to(revoke))
        .route("/staff/audit", web::get().to(audit))
        .route("/staff/lang/{tag}", web::get().to(set_lang))
        .route("/static/style.css", web::get().to(style))
        .route("/static/print.js", web::get().to(script));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn cookies_are_strict_http_only_and_secure_when_asked() {
        let c = set_cookie(session_cookie(true), "v", 60, true);
        assert!(c.starts_with("__Host-dp3t-session=v; Path=/;"));
        for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Max-Age=60"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(!set_cookie(session_cookie(false), "v", 60, false).contains("Secure"));
    }

    #[test]
    fn the_csp_forbids_inline_code_and_framing() {
        assert!(CSP.contains("default-src 'none'"));
        assert!(CSP.contains("frame-ancestors 'none'"));
        assert!(!CSP.contains("unsafe-inline"));
        assert!(
            !STYLE.contains("http") && !SCRIPT.contains("http"),
            "no external assets"
        );
    }
}
