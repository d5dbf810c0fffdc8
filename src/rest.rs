//! HTTP clients for the configured services: TLS, credentials, headers and the User-Agent.
//!
//! One [`ServiceClient`] per service, built once at start (a bad CA file or client key stops the
//! process with a config error, before it listens). Every request carries the service's
//! headers, its credentials and `User-Agent: regent/<version> (<os>, <arch>)` in OPA's style.
//! The bundle downloader and the status plugin share these clients; nothing here runs on the
//! request path.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{Method, Response};
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::Mutex;

use crate::config::services::{Credentials, OAuth2Config, ServiceConfig, TokenSource};
use crate::config::{Config, ConfigErrors};

/// A cached OAuth2 token is renewed this long before it expires.
pub const TOKEN_RENEW_MARGIN: Duration = Duration::from_secs(10);

/// `regent/<version> (<os>, <arch>)`, the shape of OPA's `Open Policy Agent/<v> (<os>, <arch>)`.
pub fn user_agent() -> String {
    format!(
        "regent/{} ({}, {})",
        crate::build::VERSION,
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

#[derive(Debug, Error)]
pub enum RestError {
    /// Transport failure: refused, reset, TLS, timeout. OPA's wording.
    #[error("request failed: {0}")]
    Request(String),
    #[error("failed to read bearer token from {path}: {message}")]
    TokenFile { path: String, message: String },
    #[error("oauth2 token request failed: {0}")]
    OAuth2(String),
}

impl RestError {
    /// A transport error with its whole cause chain.
    pub fn from_reqwest(err: reqwest::Error) -> Self {
        // reqwest's top-level message hides the cause ("error sending request"); keep the chain.
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        RestError::Request(text)
    }
}

/// How long to wait for the response headers of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderTimeout {
    /// The service's `response_header_timeout_seconds`.
    Service,
    /// The service's timeout plus this much (a long-polling request the server holds open).
    Extended(Duration),
}

/// The clients of every configured service, by name.
#[derive(Default)]
pub struct Services {
    clients: BTreeMap<String, Arc<ServiceClient>>,
}

impl Services {
    /// Builds a client per service; all failures are reported together.
    pub fn build(config: &Config) -> Result<Services, ConfigErrors> {
        let mut errors = Vec::new();
        let mut clients = BTreeMap::new();
        for svc in &config.services {
            match ServiceClient::new(svc) {
                Ok(c) => {
                    clients.insert(svc.name.clone(), Arc::new(c));
                }
                Err(e) => {
                    errors.extend(e.into_iter().map(|e| format!("services.{}.{e}", svc.name)))
                }
            }
        }
        if errors.is_empty() {
            Ok(Services { clients })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<ServiceClient>> {
        self.clients.get(name).cloned()
    }
}

enum Auth {
    None,
    Bearer { scheme: String, token: TokenSource },
    OAuth2(Box<OAuth2>),
}

struct OAuth2 {
    config: OAuth2Config,
    cached: Mutex<Option<CachedToken>>,
}

struct CachedToken {
    token: String,
    /// `None` when the token endpoint gave no `expires_in`: kept until the service answers 401.
    expires: Option<Instant>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: String,
    expires_in: Option<u64>,
}

pub struct ServiceClient {
    name: String,
    base_url: String,
    http: reqwest::Client,
    headers: HeaderMap,
    header_timeout: Option<Duration>,
    auth: Auth,
}

impl ServiceClient {
    /// Builds the client; the errors are relative key paths (`tls.ca_cert: ...`).
    pub fn new(cfg: &ServiceConfig) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut builder = reqwest::Client::builder()
            .user_agent(user_agent())
            .use_rustls_tls()
            .danger_accept_invalid_certs(cfg.allow_insecure_tls);
        if let Some(path) = &cfg.tls.ca_cert {
            match std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|pem| {
                    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())
                }) {
                Ok(certs) if !certs.is_empty() => {
                    for cert in certs {
                        builder = builder.add_root_certificate(cert);
                    }
                    // As OPA: a configured CA replaces the system roots unless asked for both.
                    builder = builder.tls_built_in_root_certs(cfg.tls.system_ca_required);
                }
                Ok(_) => errors.push(format!("tls.ca_cert: no certificate in {}", path.display())),
                Err(e) => errors.push(format!("tls.ca_cert: {}: {e}", path.display())),
            }
        }
        if let Credentials::ClientTls(tls) = &cfg.credentials {
            let read =
                |p: &std::path::Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
            match read(&tls.cert).and_then(|mut pem| {
                pem.push(b'\n');
                pem.extend(read(&tls.private_key)?);
                reqwest::Identity::from_pem(&pem).map_err(|e| e.to_string())
            }) {
                Ok(identity) => builder = builder.identity(identity),
                Err(e) => errors.push(format!("credentials.client_tls: {e}")),
            }
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &cfg.headers {
            match (
                HeaderName::try_from(k.as_str()),
                HeaderValue::try_from(v.as_str()),
            ) {
                (Ok(k), Ok(v)) => {
                    headers.insert(k, v);
                }
                _ => errors.push(format!("headers.{k}: not a valid HTTP header")),
            }
        }
        let http = builder.build().map_err(|e| {
            errors.push(format!("url: cannot build an HTTP client: {e}"));
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        let auth = match &cfg.credentials {
            Credentials::None | Credentials::ClientTls(_) => Auth::None,
            Credentials::Bearer(b) => Auth::Bearer {
                scheme: b.scheme.clone(),
                token: b.token.clone(),
            },
            Credentials::OAuth2(o) => Auth::OAuth2(Box::new(OAuth2 {
                config: o.clone(),
                cached: Mutex::new(None),
            })),
        };
        Ok(ServiceClient {
            name: cfg.name.clone(),
            base_url: cfg.url.clone(),
            http: http.expect("checked above"),
            headers,
            header_timeout: cfg.response_header_timeout,
            auth,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The service's `response_header_timeout_seconds` (`None`: wait forever).
    pub fn header_timeout(&self) -> Option<Duration> {
        self.header_timeout
    }

    /// `<service url>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, path.trim_start_matches('/'))
    }

    /// Sends one request to `<service url>/<path>` and returns once the response headers are
    /// in (the body is the caller's to read, and to bound).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
        timeout: HeaderTimeout,
    ) -> Result<Response, RestError> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .headers(self.headers.clone())
            .headers(headers);
        if let Some(auth) = self.authorization().await? {
            req = req.header(AUTHORIZATION, auth);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let limit = match (self.header_timeout, timeout) {
            (None, _) => None,
            (Some(t), HeaderTimeout::Service) => Some(t),
            (Some(t), HeaderTimeout::Extended(extra)) => Some(t + extra),
        };
        let pending = req.send();
        let resp = match limit {
            Some(limit) => tokio::time::timeout(limit, pending).await.map_err(|_| {
                RestError::Request(format!(
                    "timeout awaiting response headers after {}s",
                    limit.as_secs_f64()
                ))
            })?,
            None => pending.await,
        }
        .map_err(RestError::from_reqwest)?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            // A revoked or rotated OAuth2 token: fetch a fresh one next time.
            if let Auth::OAuth2(o) = &self.auth {
                *o.cached.lock().await = None;
            }
        }
        Ok(resp)
    }

    /// POSTs a JSON document (the status plugin's updates).
    pub async fn post_json<T: serde::Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<Response, RestError> {
        let bytes = serde_json::to_vec(body).map_err(|e| RestError::Request(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.send(
            Method::POST,
            path,
            headers,
            Some(bytes),
            HeaderTimeout::Service,
        )
        .await
    }

    async fn authorization(&self) -> Result<Option<String>, RestError> {
        match &self.auth {
            Auth::None => Ok(None),
            Auth::Bearer { scheme, token } => {
                let token = match token {
                    TokenSource::Inline(t) => t.clone(),
                    TokenSource::File(path) => tokio::fs::read_to_string(path)
                        .await
                        .map_err(|e| RestError::TokenFile {
                            path: path.display().to_string(),
                            message: e.to_string(),
                        })?
                        .trim()
                        .to_string(),
                };
                Ok(Some(format!("{scheme} {token}")))
            }
            Auth::OAuth2(o) => Ok(Some(format!("Bearer {}", self.oauth2_token(o).await?))),
        }
    }

    async fn oauth2_token(&self, o: &OAuth2) -> Result<String, RestError> {
        let mut cached = o.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.expires
                .is_none_or(|e| Instant::now() < e.checked_sub(TOKEN_RENEW_MARGIN).unwrap_or(e))
            {
                return Ok(c.token.clone());
            }
        }
        let cfg = &o.config;
        let mut form: Vec<(String, String)> =
            vec![("grant_type".into(), "client_credentials".into())];
        if !cfg.scopes.is_empty() {
            form.push(("scope".into(), cfg.scopes.join(" ")));
        }
        form.extend(cfg.additional_parameters.clone());
        let mut req = self
            .http
            .post(&cfg.token_url)
            .basic_auth(&cfg.client_id, Some(&cfg.client_secret))
            .form(&form);
        for (k, v) in &cfg.additional_headers {
            req = req.header(k, v);
        }
        let limit = self.header_timeout.unwrap_or(Duration::MAX);
        let resp = tokio::time::timeout(limit, req.send())
            .await
            .map_err(|_| RestError::OAuth2("timeout".into()))?
            .map_err(|e| RestError::OAuth2(RestError::from_reqwest(e).to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(RestError::OAuth2(format!(
                "token endpoint replied with {}",
                status_text(status.as_u16())
            )));
        }
        let body: TokenResponse = resp
            .json()
            .await
            .map_err(|e| RestError::OAuth2(format!("invalid token response: {e}")))?;
        if !body.token_type.eq_ignore_ascii_case("bearer") {
            return Err(RestError::OAuth2(format!(
                "unknown token type returned from token endpoint: {:?}",
                body.token_type
            )));
        }
        *cached = Some(CachedToken {
            token: body.access_token.clone(),
            // The token endpoint's `expires_in` is untrusted: a lifetime past what the clock can
            // represent is kept like one without expiry (renewed when the service answers 401).
            expires: body
                .expires_in
                .and_then(|s| Instant::now().checked_add(Duration::from_secs(s))),
        });
        Ok(body.access_token)
    }
}

/// Go's `http.StatusText`: the canonical reason phrase, as OPA prints it in errors.
pub fn status_text(code: u16) -> String {
    reqwest::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A one-route axum server on loopback that records what it was sent.
    async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    fn client(url: &str, credentials: serde_json::Value) -> ServiceClient {
        let c = Config::from_raw(json!({"services": {"s": {
            "url": url, "headers": {"X-Team": "a"}, "credentials": credentials,
        }}}))
        .unwrap();
        ServiceClient::new(&c.services[0]).unwrap()
    }

    fn echo_headers() -> axum::Router {
        axum::Router::new().route(
            "/echo",
            axum::routing::get(|h: axum::http::HeaderMap| async move {
                let pick = |k: &str| h.get(k).map(|v| v.to_str().unwrap().to_string());
                axum::Json(json!({
                    "ua": pick("user-agent"),
                    "auth": pick("authorization"),
                    "team": pick("x-team"),
                }))
            }),
        )
    }

    async fn echo(c: &ServiceClient) -> serde_json::Value {
        c.send(
            Method::GET,
            "/echo",
            HeaderMap::new(),
            None,
            HeaderTimeout::Service,
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn user_agent_headers_and_bearer_token_file_reread() {
        let url = serve(echo_headers()).await;
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "one\n").unwrap();
        let c = client(
            &url,
            json!({"bearer": {"token_path": token.to_str().unwrap(), "scheme": "Token"}}),
        );
        let got = echo(&c).await;
        assert_eq!(got["ua"], user_agent());
        assert!(got["ua"].as_str().unwrap().starts_with("regent/"));
        assert_eq!(got["team"], "a");
        assert_eq!(got["auth"], "Token one");
        std::fs::write(&token, "two").unwrap();
        assert_eq!(echo(&c).await["auth"], "Token two");
    }

    #[tokio::test]
    async fn oauth2_token_is_fetched_once_and_cached() {
        // A lifetime past what the clock can represent is kept like one without expiry.
        for expires_in in [json!(3600), json!(u64::MAX)] {
            oauth2_token_cached(expires_in).await;
        }
    }

    async fn oauth2_token_cached(expires_in: serde_json::Value) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let router = echo_headers().route(
            "/token",
            axum::routing::post(move |h: axum::http::HeaderMap, body: String| {
                let counter = counter.clone();
                let expires_in = expires_in.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    // Basic base64("id:sec")
                    assert_eq!(h["authorization"], "Basic aWQ6c2Vj");
                    assert!(body.contains("grant_type=client_credentials"), "{body}");
                    assert!(body.contains("scope=read+write"), "{body}");
                    axum::Json(
                        json!({"access_token": "tok", "token_type": "bearer", "expires_in": expires_in}),
                    )
                }
            }),
        );
        let url = serve(router).await;
        let c = client(
            &url,
            json!({"oauth2": {"token_url": format!("{url}/token"), "client_id": "id",
                              "client_secret": "sec", "scopes": ["read", "write"]}}),
        );
        assert_eq!(echo(&c).await["auth"], "Bearer tok");
        assert_eq!(echo(&c).await["auth"], "Bearer tok");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn header_timeout_and_refused_connections_are_request_errors() {
        let router = axum::Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        );
        let url = serve(router).await;
        let c = Config::from_raw(
            json!({"services": {"s": {"url": url, "response_header_timeout_seconds": 1}}}),
        )
        .unwrap();
        let c = ServiceClient::new(&c.services[0]).unwrap();
        let err = c
            .send(
                Method::GET,
                "slow",
                HeaderMap::new(),
                None,
                HeaderTimeout::Service,
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("request failed: timeout"),
            "{err}"
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let c = client(&format!("http://127.0.0.1:{port}"), json!(null));
        let err = c
            .send(
                Method::GET,
                "x",
                HeaderMap::new(),
                None,
                HeaderTimeout::Service,
            )
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("request failed: "), "{err}");
    }

    #[test]
    fn missing_ca_file_is_a_config_error() {
        let c = Config::from_raw(json!({"services": {"s": {"url": "https://s", "tls": {"ca_cert": "/nonexistent/ca.pem"}}}}))
            .unwrap();
        let Err(err) = Services::build(&c) else {
            panic!("expected an error")
        };
        assert!(
            err.0[0].starts_with("services.s.tls.ca_cert: /nonexistent/ca.pem"),
            "{err}"
        );
    }
}
