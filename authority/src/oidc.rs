//! Staff sign-in through the health authority's OpenID Connect provider: the
//! authorization code flow with PKCE (S256), a `state` bound to the browser by a cookie,
//! and a `nonce` checked in the ID token, with the `openidconnect` crate.
//!
//! The provider is discovered once at start (`/.well-known/openid-configuration` and its
//! keys). A started sign-in keeps its PKCE verifier and nonce in the database under the
//! hash of `state` for ten minutes and can be finished once. Who may sign in is the
//! provider's decision: configure the client there so that only health-authority staff
//! can obtain tokens for it (and require a second factor there). The staff name shown and
//! written to the audit log is `oidc:` plus the `preferred_username`, else the `email`,
//! else the subject.
//!
//! HTTP goes through the workspace's `reqwest` with rustls (the system's trust store),
//! without following redirects.

use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};

use crate::{Error, Result};

/// How long a started sign-in may take.
pub const LOGIN_SECONDS: u64 = 600;

/// The provider settings (from [`crate::config::Config`]).
#[derive(Clone, PartialEq, Eq)]
pub struct OidcSettings {
    /// Issuer URL; discovery reads `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// This service's client id at the provider.
    pub client_id: String,
    /// The client secret, for confidential clients (PKCE is used either way).
    pub client_secret: Option<String>,
    /// The callback URL registered at the provider: `https://<this service>/staff/oidc/callback`.
    pub redirect_url: String,
    /// Name of the provider on the sign-in button.
    pub display_name: String,
}

impl std::fmt::Debug for OidcSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSettings")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_url", &self.redirect_url)
            .finish_non_exhaustive()
    }
}

/// A transport failure, for `openidconnect`'s client trait.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

async fn send(client: reqwest::Client, request: HttpRequest) -> Result<HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let mut rb = client
        .request(parts.method, parts.uri.to_string())
        .body(body);
    for (name, value) in &parts.headers {
        rb = rb.header(name, value);
    }
    let resp = rb.send().await.map_err(|e| HttpError(e.to_string()))?;
    let mut builder = openidconnect::http::Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        builder = builder.header(name, value);
    }
    let body = resp.bytes().await.map_err(|e| HttpError(e.to_string()))?;
    builder
        .body(body.to_vec())
        .map_err(|e| HttpError(e.to_string()))
}

/// A started sign-in: where to send the browser, and what to keep until the callback.
#[derive(Debug)]
pub struct Started {
    /// The provider's authorization URL with all parameters.
    pub authorize_url: String,
    /// The `state` value (also set as a cookie).
    pub state: String,
    /// The PKCE verifier.
    pub pkce_verifier: String,
    /// The nonce expected in the ID token.
    pub nonce: String,
}

/// The discovered provider.
pub struct Oidc {
    metadata: CoreProviderMetadata,
    settings: OidcSettings,
    redirect: RedirectUrl,
    http: reqwest::Client,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.settings.issuer)
            .field("client_id", &self.settings.client_id)
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// Discover the provider at `settings.issuer`.
    pub async fn discover(settings: OidcSettings) -> Result<Oidc> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Oidc(format!("HTTP client: {e}")))?;
        let issuer = IssuerUrl::new(settings.issuer.clone())
            .map_err(|e| Error::Oidc(format!("issuer URL: {e}")))?;
        let redirect = RedirectUrl::new(settings.redirect_url.clone())
            .map_err(|e| Error::Oidc(format!("redirect URL: {e}")))?;
        let client = http.clone();
        let call = move |r: HttpRequest| send(client.clone(), r);
        let metadata = CoreProviderMetadata::discover_async(issuer, &call)
            .await
            .map_err(|e| Error::Oidc(format!("discovery at {}: {e}", settings.issuer)))?;
        Ok(Oidc {
            metadata,
            settings,
            redirect,
            http,
        })
    }

    /// The provider's name for the sign-in button.
    pub fn display_name(&self) -> &str {
        &self.settings.display_name
    }

    fn client(
        &self,
    ) -> CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            self.metadata.clone(),
            ClientId::new(self.settings.client_id.clone()),
            self.settings.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// Start a sign-in: a fresh PKCE pair, state and nonce.
    pub fn start(&self) -> Started {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client()
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Started {
            authorize_url: url.to_string(),
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            nonce: nonce.secret().clone(),
        }
    }

    /// Finish a sign-in: exchange `code` (with the PKCE verifier), verify the ID token
    /// (signature by the provider's keys, issuer, audience, expiry, nonce) and return the
    /// staff name, `oidc:<name>`.
    pub async fn finish(&self, code: &str, pkce_verifier: &str, nonce: &str) -> Result<String> {
        let client = self.client();
        let http = self.http.clone();
        let call = move |r: HttpRequest| send(http.clone(), r);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| Error::Oidc(format!("the provider has no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&call)
            .await
            .map_err(|e| Error::Oidc(format!("token request: {e}")))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| Error::Oidc("the token response has no ID token".into()))?;
        let claims = id_token
            .claims(&client.id_token_verifier(), &Nonce::new(nonce.to_owned()))
            .map_err(|e| Error::Oidc(format!("ID token: {e}")))?;
        let name = claims
            .preferred_username()
            .map(|u| u.as_str().to_owned())
            .or_else(|| claims.email().map(|e| e.as_str().to_owned()))
            .unwrap_or_else(|| claims.subject().as_str().to_owned());
        Ok(format!("oidc:{}", sanitize(&name)))
    }
}

/// Keep a provider-supplied name printable and short (it is shown and logged).
fn sanitize(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_are_printable_and_short() {
        assert_eq!(sanitize("dana\n\u{7}x"), "danax");
        assert_eq!(sanitize(&"a".repeat(100)).len(), 64);
    }
}
