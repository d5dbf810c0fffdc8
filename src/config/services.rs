//! `services`: the control-plane endpoints that bundles (and the status plugin) talk to.
//!
//! OPA accepts a map (`services: {acme: {...}}`) or a list (`services: [{name: acme, ...}]`);
//! both become an ordered list here, in declaration order, so "the first service" (the default
//! for a bundle without `service`) is well defined. Credentials are validated here; the HTTP
//! clients are built from the result in `crate::rest`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value as Json;

use super::{scoped, Validator};

/// OPA's default `response_header_timeout_seconds`.
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT_SECONDS: u64 = 10;
/// OPA's default `credentials.bearer.scheme`.
pub const DEFAULT_BEARER_SCHEME: &str = "Bearer";
/// The only OAuth2 grant regent implements.
pub const OAUTH2_CLIENT_CREDENTIALS: &str = "client_credentials";

/// OPA's error when several credential methods are configured.
pub const ONE_CREDENTIAL_METHOD: &str = "a maximum one credential method must be specified";

/// Credential methods OPA has that regent does not implement yet: configuring one is an error
/// rather than silently sending unauthenticated requests.
const UNSUPPORTED_CREDENTIALS: [&str; 4] = [
    "s3_signing",
    "gcp_metadata",
    "azure_managed_identity",
    "plugin",
];

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    /// Base URL without a trailing `/`.
    pub url: String,
    pub headers: BTreeMap<String, String>,
    /// `None` when configured as 0 (wait forever, as Go's transport does).
    pub response_header_timeout: Option<Duration>,
    pub tls: TlsConfig,
    pub allow_insecure_tls: bool,
    pub credentials: Credentials,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsConfig {
    /// PEM file of CA certificates to trust instead of the system roots.
    pub ca_cert: Option<PathBuf>,
    /// Trust the system roots as well as `ca_cert`.
    pub system_ca_required: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    None,
    Bearer(BearerConfig),
    ClientTls(ClientTlsConfig),
    OAuth2(OAuth2Config),
}

#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    Inline(String),
    /// Re-read on every request, so a rotated token is picked up without a restart.
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct BearerConfig {
    pub token: TokenSource,
    pub scheme: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientTlsConfig {
    pub cert: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2Config {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub scopes: Vec<String>,
    pub additional_headers: BTreeMap<String, String>,
    pub additional_parameters: BTreeMap<String, String>,
}

/// The names of the declared services in order, valid or not: bundles are checked against
/// these so one broken service does not hide the bundles' own errors.
pub fn declared_names(node: Option<&Json>) -> Vec<String> {
    match node {
        Some(Json::Object(map)) => map.keys().cloned().collect(),
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|i| i.get("name").and_then(Json::as_str).map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Reads `services` (map or list form) from the raw tree.
pub fn parse(v: &mut Validator) -> Vec<ServiceConfig> {
    let Some(node) = v.get("services").cloned() else {
        return Vec::new();
    };
    let entries: Vec<(String, Json)> = match node {
        Json::Object(map) => map.into_iter().collect(),
        Json::Array(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| match item.get("name").and_then(Json::as_str) {
                Some(name) if !name.is_empty() => Some((name.to_string(), item.clone())),
                _ => {
                    v.errors
                        .push(format!("services[{i}].name: missing service name"));
                    None
                }
            })
            .collect(),
        other => {
            v.errors.push(format!(
                "services: expected a mapping or a list, got {other}"
            ));
            return Vec::new();
        }
    };
    let mut out: Vec<ServiceConfig> = Vec::new();
    for (name, node) in entries {
        if out.iter().any(|s| s.name == name) {
            v.errors
                .push(format!("services.{name}: duplicate service name"));
            continue;
        }
        let prefix = format!("services.{name}");
        if let Some(s) = scoped(v.errors, &node, &prefix, |sv| service(sv, &name)) {
            out.push(s);
        }
    }
    out
}

fn service(v: &mut Validator, name: &str) -> Option<ServiceConfig> {
    if !v.raw.is_object() {
        v.errors
            .push(format!(": expected a mapping, got {}", v.raw));
        return None;
    }
    let url = match v.string("url") {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(url.trim_end_matches('/').to_string())
        }
        Some(url) => {
            v.errors
                .push(format!("url: expected an http(s) URL, got {url:?}"));
            None
        }
        None => {
            v.errors.push("url: missing service URL".into());
            None
        }
    };
    let headers = v.string_map("headers");
    let timeout = v
        .u64("response_header_timeout_seconds")
        .unwrap_or(DEFAULT_RESPONSE_HEADER_TIMEOUT_SECONDS);
    let tls = TlsConfig {
        ca_cert: v.string("tls.ca_cert").map(PathBuf::from),
        system_ca_required: v.bool("tls.system_ca_required").unwrap_or(false),
    };
    let allow_insecure_tls = v.bool("allow_insecure_tls").unwrap_or(false);
    if let Some(kind) = v.string("type") {
        if kind.eq_ignore_ascii_case("oci") {
            v.errors
                .push("type: OCI registries are not supported by regent yet".into());
        }
    }
    let credentials = credentials(v);
    Some(ServiceConfig {
        name: name.to_string(),
        url: url?,
        headers,
        response_header_timeout: (timeout > 0).then(|| Duration::from_secs(timeout)),
        tls,
        allow_insecure_tls,
        credentials: credentials?,
    })
}

fn credentials(v: &mut Validator) -> Option<Credentials> {
    let Some(node) = v.get("credentials") else {
        return Some(Credentials::None);
    };
    let Some(map) = node.as_object() else {
        v.errors
            .push(format!("credentials: expected a mapping, got {node}"));
        return None;
    };
    let methods: Vec<String> = map
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    if methods.len() > 1 {
        v.errors
            .push(format!("credentials: {ONE_CREDENTIAL_METHOD}"));
        return None;
    }
    let Some(method) = methods.first() else {
        return Some(Credentials::None);
    };
    match method.as_str() {
        "bearer" => bearer(v).map(Credentials::Bearer),
        "client_tls" => client_tls(v).map(Credentials::ClientTls),
        "oauth2" => oauth2(v).map(Credentials::OAuth2),
        m if UNSUPPORTED_CREDENTIALS.contains(&m) => {
            v.errors.push(format!(
                "credentials.{m}: this credential method is not supported by regent yet"
            ));
            None
        }
        m => {
            v.errors
                .push(format!("credentials.{m}: unknown credential method"));
            None
        }
    }
}

fn bearer(v: &mut Validator) -> Option<BearerConfig> {
    let token = v.string("credentials.bearer.token");
    let path = v.string("credentials.bearer.token_path");
    let scheme = v
        .string("credentials.bearer.scheme")
        .unwrap_or_else(|| DEFAULT_BEARER_SCHEME.into());
    let token = match (token, path) {
        (Some(t), None) => TokenSource::Inline(t),
        (None, Some(p)) => TokenSource::File(PathBuf::from(p)),
        _ => {
            v.errors.push(
                "credentials.bearer: invalid config: specify a value for either the \"token\" or \"token_path\" field"
                    .into(),
            );
            return None;
        }
    };
    Some(BearerConfig { token, scheme })
}

fn client_tls(v: &mut Validator) -> Option<ClientTlsConfig> {
    let cert = v.string("credentials.client_tls.cert");
    let key = v.string("credentials.client_tls.private_key");
    if v.get("credentials.client_tls.private_key_passphrase")
        .is_some()
    {
        v.errors.push(
            "credentials.client_tls.private_key_passphrase: encrypted private keys are not supported by regent yet"
                .into(),
        );
        return None;
    }
    if cert.is_none() {
        v.errors.push("credentials.client_tls.cert: missing".into());
    }
    if key.is_none() {
        v.errors
            .push("credentials.client_tls.private_key: missing".into());
    }
    Some(ClientTlsConfig {
        cert: cert?.into(),
        private_key: key?.into(),
    })
}

fn oauth2(v: &mut Validator) -> Option<OAuth2Config> {
    let grant = v
        .string("credentials.oauth2.grant_type")
        .unwrap_or_else(|| OAUTH2_CLIENT_CREDENTIALS.into());
    if grant != OAUTH2_CLIENT_CREDENTIALS {
        v.errors.push(format!(
            "credentials.oauth2.grant_type: only {OAUTH2_CLIENT_CREDENTIALS:?} is supported by regent yet, got {grant:?}"
        ));
        return None;
    }
    if v.get("credentials.oauth2.signing_key").is_some() {
        v.errors.push(
            "credentials.oauth2.signing_key: JWT client assertions are not supported by regent yet"
                .into(),
        );
        return None;
    }
    let mut required = |key: &str| {
        let full = format!("credentials.oauth2.{key}");
        let value = v.string(&full);
        if value.is_none() && v.get(&full).is_none() {
            v.errors.push(format!("{full}: missing"));
        }
        value
    };
    let token_url = required("token_url");
    let client_id = required("client_id");
    let client_secret = required("client_secret");
    let scopes = v
        .string_list("credentials.oauth2.scopes")
        .unwrap_or_default();
    let additional_headers = v.string_map("credentials.oauth2.additional_headers");
    let additional_parameters = v.string_map("credentials.oauth2.additional_parameters");
    Some(OAuth2Config {
        token_url: token_url?,
        client_id: client_id?,
        client_secret: client_secret?,
        scopes,
        additional_headers,
        additional_parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    #[test]
    fn map_and_list_forms_keep_declaration_order() {
        let c = Config::from_raw(json!({"services": {
            "zeta": {"url": "https://z.example/"},
            "alpha": {"url": "http://a.example", "response_header_timeout_seconds": 0},
        }}))
        .unwrap();
        let names: Vec<_> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha"]);
        assert_eq!(c.services[0].url, "https://z.example");
        assert_eq!(
            c.services[0].response_header_timeout,
            Some(Duration::from_secs(10))
        );
        assert_eq!(c.services[1].response_header_timeout, None);

        let c = Config::from_raw(json!({"services": [
            {"name": "one", "url": "http://1", "credentials": {"bearer": {"token": "t"}}},
        ]}))
        .unwrap();
        assert_eq!(
            c.services[0].credentials,
            Credentials::Bearer(BearerConfig {
                token: TokenSource::Inline("t".into()),
                scheme: "Bearer".into()
            })
        );
    }

    #[test]
    fn credential_errors_name_their_key() {
        let err = Config::from_raw(json!({"services": {
            "a": {"url": "http://a", "credentials": {"bearer": {"token": "t"}, "client_tls": {}}},
            "b": {"url": "ftp://b", "credentials": {"bearer": {}}},
            "c": {"url": "http://c", "credentials": {"s3_signing": {}}},
        }}))
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "services.a.credentials: a maximum one credential method must be specified"
            ),
            "{text}"
        );
        assert!(
            text.contains("services.b.url: expected an http(s) URL"),
            "{text}"
        );
        assert!(
            text.contains("services.b.credentials.bearer: invalid config"),
            "{text}"
        );
        assert!(text.contains("services.c.credentials.s3_signing"), "{text}");
        assert_eq!(err.0.len(), 4, "{text}");
    }

    #[test]
    fn oauth2_client_credentials() {
        let c = Config::from_raw(json!({"services": {"s": {"url": "http://s", "credentials": {
            "oauth2": {"token_url": "http://t/token", "client_id": "id", "client_secret": "sec", "scopes": ["a", "b"]}
        }}}}))
        .unwrap();
        let Credentials::OAuth2(o) = &c.services[0].credentials else {
            panic!("{:?}", c.services[0].credentials)
        };
        assert_eq!(o.scopes, ["a", "b"]);
        let err = Config::from_raw(
            json!({"services": {"s": {"url": "http://s", "credentials": {
                "oauth2": {"token_url": "http://t/token"}
            }}}}),
        )
        .unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
    }
}
