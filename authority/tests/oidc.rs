//! Staff sign-in through OpenID Connect, against a small OpenID provider of our own
//! started by the test on 127.0.0.1: discovery, the authorization endpoint (which
//! approves the test user at once), a token endpoint that checks the PKCE verifier
//! against the challenge and the client's credentials, and the key set. ID tokens are
//! ES256 with the nonce of the request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Mutex;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use common::{iso, today, Backend, Harness, Staff};
use sha2::Digest;

const CLIENT_ID: &str = "dp3t-authority";
const CLIENT_SECRET: &str = "test-client-secret";

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What the authorization endpoint remembers per code.
#[derive(Clone)]
struct Grant {
    challenge: String,
    nonce: String,
    redirect_uri: String,
}

struct ProviderState {
    issuer: String,
    key_pem: String,
    jwk: serde_json::Value,
    grants: Mutex<HashMap<String, Grant>>,
    /// Tamper with the next ID token's nonce (to test that it is checked).
    wrong_nonce: Mutex<bool>,
}

async fn discovery(st: web::Data<ProviderState>) -> HttpResponse {
    let i = &st.issuer;
    HttpResponse::Ok().json(serde_json::json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "scopes_supported": ["openid", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

async fn jwks(st: web::Data<ProviderState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"keys": [st.jwk]}))
}

async fn authorize(
    st: web::Data<ProviderState>,
    q: web::Query<HashMap<String, String>>,
) -> HttpResponse {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code"
        || get("client_id") != CLIENT_ID
        || get("code_challenge_method") != "S256"
        || get("code_challenge").is_empty()
        || !get("scope").split(' ').any(|s| s == "openid")
    {
        return HttpResponse::BadRequest().body("bad authorization request");
    }
    let code = b64url(&rand::random::<[u8; 16]>());
    st.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            challenge: get("code_challenge"),
            nonce: get("nonce"),
            redirect_uri: get("redirect_uri"),
        },
    );
    let location = format!(
        "{}?code={}&state={}",
        get("redirect_uri"),
        code,
        common::urlencode(&get("state"))
    );
    HttpResponse::Found()
        .insert_header(("location", location))
        .finish()
}

async fn token(
    st: web::Data<ProviderState>,
    req: HttpRequest,
    form: web::Form<HashMap<String, String>>,
) -> HttpResponse {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        != Some(basic.as_str())
    {
        return HttpResponse::Unauthorized().json(serde_json::json!({"error": "invalid_client"}));
    }
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let Some(grant) = st.grants.lock().unwrap().remove(&get("code")) else {
        return HttpResponse::BadRequest().json(serde_json::json!({"error": "invalid_grant"}));
    };
    let challenge = b64url(&sha2::Sha256::digest(get("code_verifier").as_bytes()));
    if get("grant_type") != "authorization_code"
        || challenge != grant.challenge
        || get("redirect_uri") != grant.redirect_uri
    {
        return HttpResponse::BadRequest().json(serde_json::json!({"error": "invalid_grant"}));
    }
    let now = common::now();
    let nonce = if std::mem::take(&mut *st.wrong_nonce.lock().unwrap()) {
        "not-the-nonce".to_owned()
    } else {
        grant.nonce
    };
    let claims = serde_json::json!({
        "iss": st.issuer, "sub": "u-4711", "aud": CLIENT_ID, "iat": now, "exp": now + 300,
        "nonce": nonce, "preferred_username": "dana",
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let id_token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(st.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    HttpResponse::Ok().json(serde_json::json!({
        "access_token": b64url(&rand::random::<[u8; 16]>()),
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
}

struct Provider {
    issuer: String,
    state: web::Data<ProviderState>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Provider {
    fn start() -> Provider {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::EncodePrivateKey;
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let key_pem = secret
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .unwrap()
            .to_string();
        let point = secret.public_key().to_encoded_point(false);
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
            "x": b64url(point.x().unwrap()), "y": b64url(point.y().unwrap()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let issuer = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let state = web::Data::new(ProviderState {
            issuer: issuer.clone(),
            key_pem,
            jwk,
            grants: Mutex::new(HashMap::new()),
            wrong_nonce: Mutex::new(false),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(st.clone())
                        .route(
                            "/.well-known/openid-configuration",
                            web::get().to(discovery),
                        )
                        .route("/jwks", web::get().to(jwks))
                        .route("/authorize", web::get().to(authorize))
                        .route("/token", web::post().to(token))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)
                .unwrap()
                .run();
                tx.send(server.handle()).unwrap();
                let _ = server.await;
            });
        });
        let handle = rx.recv().unwrap();
        Provider {
            issuer,
            state,
            handle,
            thread: Some(thread),
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Follow the sign-in: start at the authority, let the provider approve, come back.
/// Returns the callback's status and body.
async fn sign_in(h: &Harness, provider: &Provider, s: &mut Staff<'_>) -> (u16, String) {
    let (st, to_provider) = s.get("/staff/oidc/start").await;
    assert_eq!(st, 303);
    assert!(
        to_provider.starts_with(&format!("{}/authorize?", provider.issuer)),
        "{to_provider}"
    );
    assert!(to_provider.contains("code_challenge_method=S256"));
    let resp = h.client.get(&to_provider).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let back = resp.headers()["location"].to_str().unwrap().to_owned();
    let path = back
        .strip_prefix(&h.url)
        .expect("back at the authority")
        .to_owned();
    assert!(path.starts_with("/staff/oidc/callback?"));
    s.get(&path).await
}

fn oidc_config(
    provider: &Provider,
    url_of_authority: &str,
) -> impl FnOnce(&mut authority::config::Config) {
    let issuer = provider.issuer.clone();
    let redirect = format!("{url_of_authority}/staff/oidc/callback");
    move |c| {
        c.oidc_issuer = Some(issuer);
        c.oidc_client_id = Some(CLIENT_ID.into());
        c.oidc_client_secret = Some(CLIENT_SECRET.into());
        c.oidc_redirect_url = Some(redirect);
        c.oidc_display_name = "Test IdP".into();
    }
}

async fn staff_sign_in_through_the_provider(b: Backend) {
    let provider = Provider::start();
    // The callback URL must name the authority's address, which is only known once it
    // listens: reserve a port first.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let authority_url = format!("http://127.0.0.1:{port}");
    let tweak = oidc_config(&provider, &authority_url);
    let h = Harness::start(b, move |c| {
        tweak(c);
        c.bind = format!("127.0.0.1:{port}");
    })
    .await;
    let mut s = Staff::new(&h);
    let (_, login) = s.get("/staff/login").await;
    assert!(login.contains("id=\"oidc\"") && login.contains("Sign in with Test IdP"));

    let (st, page) = sign_in(&h, &provider, &mut s).await;
    assert_eq!(st, 200, "{page}");
    assert!(page.contains("http-equiv=\"refresh\" content=\"0;url=/staff\""));
    let (st, page) = s.get("/staff").await;
    assert_eq!(st, 200);
    assert!(page.contains("oidc:dana"));
    // A code created by a provider account is audited under its name.
    let csrf = common::csrf_of(&page);
    let (st, _) = s
        .post("/staff/codes", &[("onset", &iso(today())), ("csrf", &csrf)])
        .await;
    assert_eq!(st, 200);
    let audit = h.state().db.audit_since(0).await.unwrap();
    assert_eq!((audit[0].actor.as_str(), audit[0].count), ("oidc:dana", 1));

    // A callback whose state is not this browser's is refused (login CSRF) ...
    let mut other = Staff::new(&h);
    let (st, to_provider) = other.get("/staff/oidc/start").await;
    assert_eq!(st, 303);
    let resp = h.client.get(&to_provider).send().await.unwrap();
    let back = resp.headers()["location"].to_str().unwrap().to_owned();
    let path = back.strip_prefix(&h.url).unwrap().to_owned();
    let mut stranger = Staff::new(&h);
    assert_eq!(stranger.get(&path).await.0, 401);
    assert_eq!(stranger.get("/staff").await, (303, "/staff/login".into()));
    // ... the browser that started it finishes it, once: a replay is refused.
    let cookies_before = other.jar.clone();
    assert!(cookies_before.0.iter().any(|(k, _)| k == "dp3t-oidc"));
    assert_eq!(other.get(&path).await.0, 200);
    assert_eq!(other.get("/staff").await.0, 200);
    let mut replay = Staff::new(&h);
    replay.jar = cookies_before;
    assert_eq!(replay.get(&path).await.0, 401);
    assert_eq!(replay.get("/staff").await, (303, "/staff/login".into()));

    // An ID token with another nonce is refused.
    *provider.state.wrong_nonce.lock().unwrap() = true;
    let mut third = Staff::new(&h);
    let (st, _) = sign_in(&h, &provider, &mut third).await;
    assert_eq!(st, 401);
    assert_eq!(third.get("/staff").await, (303, "/staff/login".into()));
    // Without a provider configured, the OIDC routes do not exist.
    h.finish().await;
    let h = Harness::start(b, |_| {}).await;
    let mut s = Staff::new(&h);
    assert_eq!(s.get("/staff/oidc/start").await.0, 404);
    h.finish().await;
}

on_both_databases!(staff_sign_in_through_the_provider);
