//! Policy API: `GET /v1/policies`, `GET|PUT|DELETE /v1/policies/{id...}`.
//!
//! A module id is the rest of the URL path, percent-decoded as a whole (ids may contain `/`).
//! `PUT` parses the module alone first (syntax errors, "empty module", bundle roots of its
//! package), then the whole policy set is compiled into a new snapshot; any failure leaves the
//! store unchanged. `ast` is an OPA-shaped module skeleton (see docs/compatibility.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use percent_encoding::percent_decode_str;
use serde::Serialize;
use serde_json::Value as Json;

use super::error::ApiError;
use super::params::Params;
use super::timers::{RequestTimers, Timers};
use super::{blocking, body, reply, AppState};
use crate::engine::modules::{is_empty_module, parse_module};
use crate::engine::{roots, Draft, Edit, EngineError, Policy, Snapshot};

const PREFIX: &str = "/v1/policies/";

#[derive(Serialize)]
struct PolicyV1<'a> {
    id: &'a str,
    raw: &'a str,
    ast: &'a Json,
}

#[derive(Serialize)]
struct Listing<'a> {
    result: Vec<PolicyV1<'a>>,
}

#[derive(Serialize)]
struct One<'a> {
    result: PolicyV1<'a>,
}

/// `{}` or `{"metrics": …}`: the answer to PUT and DELETE.
#[derive(Serialize)]
struct Done {
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<Timers>,
}

fn policy_id(uri: &Uri) -> String {
    let raw = uri.path().strip_prefix(PREFIX).unwrap_or("");
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

fn describe<'a>(snapshot: &'a Snapshot, id: &'a str, policy: &'a Policy) -> PolicyV1<'a> {
    static NO_AST: Json = Json::Null;
    PolicyV1 {
        id,
        raw: &policy.raw,
        ast: snapshot.modules().get(id).map_or(&NO_AST, |m| &m.ast),
    }
}

pub async fn list(State(state): State<Arc<AppState>>, uri: Uri) -> Response {
    let snapshot = state.store.snapshot();
    let result = snapshot
        .policies()
        .iter()
        .map(|(id, policy)| describe(&snapshot, id, policy))
        .collect();
    let pretty = Params::parse(uri.query()).flag("pretty");
    reply::ok(&Listing { result }, pretty)
}

pub async fn get(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, ApiError> {
    let id = policy_id(&uri);
    let snapshot = state.store.snapshot();
    let (id, policy) = snapshot
        .policies()
        .get_key_value(&id)
        .ok_or(EngineError::PolicyNotFound(id))?;
    let pretty = Params::parse(uri.query()).flag("pretty");
    Ok(reply::ok(
        &One {
            result: describe(&snapshot, id, policy),
        },
        pretty,
    ))
}

/// Refuses to touch an existing module whose package lies under a bundle root.
fn check_existing(draft: &Draft, id: &str) -> Result<(), EngineError> {
    if let Some(policy) = draft.policies.get(id) {
        // A stored module always parses; if it somehow does not, its package is unknown and
        // the new module's own check below still applies.
        if let Ok(existing) = parse_module(id, policy) {
            roots::check_write(&draft.bundles, &existing.package)?;
        }
    }
    Ok(())
}

/// What a PUT edit measured and decided.
struct PutOutcome {
    noop: bool,
    parse: Duration,
    edit: Duration,
}

pub async fn put(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let mut timers = RequestTimers::new(params.flag("metrics"));
    let id = policy_id(&uri);
    let read = Instant::now();
    // Policies arrive as text/plain and are read raw (no gzip), as in OPA.
    let bytes = body::read(&headers, body, &state.config.server.decoding, false).await?;
    timers.record("timer_server_read_bytes_ns", read.elapsed());
    let raw = String::from_utf8(bytes.to_vec())
        .map_err(|e| ApiError::InvalidParameter(format!("module is not UTF-8: {e}")))?;
    let policy = Policy {
        raw,
        rego_v1: state.store.rego_v1(),
    };
    let started = Instant::now();
    let outcome = blocking::write(&state.store, move |draft| {
        let edit_started = Instant::now();
        check_existing(draft, &id)?;
        if draft.policies.get(&id) == Some(&policy) {
            return Ok(Edit::Unchanged(PutOutcome {
                noop: true,
                parse: Duration::ZERO,
                edit: edit_started.elapsed(),
            }));
        }
        if is_empty_module(&policy.raw) {
            return Err(EngineError::EmptyModule);
        }
        let parse_started = Instant::now();
        let module = parse_module(&id, &policy)?;
        let parse = parse_started.elapsed();
        roots::check_write(&draft.bundles, &module.package)?;
        draft.policies.insert(id, policy);
        Ok(Edit::Changed(PutOutcome {
            noop: false,
            parse,
            edit: edit_started.elapsed(),
        }))
    })
    .await?
    .map_err(compile_error)?;
    if !outcome.noop {
        timers.record("timer_rego_module_parse_ns", outcome.parse);
        // The rest of the write is compiling the policy set into the new snapshot.
        timers.record(
            "timer_rego_module_compile_ns",
            started.elapsed().saturating_sub(outcome.edit),
        );
    }
    Ok(reply::ok(
        &Done {
            metrics: timers.into_reported(),
        },
        params.flag("pretty"),
    ))
}

pub async fn delete(State(state): State<Arc<AppState>>, uri: Uri) -> Result<Response, ApiError> {
    let params = Params::parse(uri.query());
    let mut timers = RequestTimers::new(params.flag("metrics"));
    let id = policy_id(&uri);
    let started = Instant::now();
    blocking::write(&state.store, move |draft| {
        if !draft.policies.contains_key(&id) {
            return Err(EngineError::PolicyNotFound(id));
        }
        check_existing(draft, &id)?;
        draft.policies.remove(&id);
        Ok(Edit::Changed(()))
    })
    .await?
    .map_err(|e| match compile_error(e) {
        // The remaining modules no longer compile: OPA calls that an invalid operation.
        ApiError::Engine(EngineError::Compile(errors)) => ApiError::InvalidOperationWithErrors {
            message: "error(s) occurred while compiling module(s)".into(),
            errors,
        },
        other => other,
    })?;
    timers.record("timer_rego_module_compile_ns", started.elapsed());
    Ok(reply::ok(
        &Done {
            metrics: timers.into_reported(),
        },
        params.flag("pretty"),
    ))
}

/// Modules that conflict with base data are compile errors of the module set here (the Data
/// API reports the same conflict as a single message).
fn compile_error(err: EngineError) -> ApiError {
    match err {
        EngineError::DataConflict(errors) => ApiError::Engine(EngineError::Compile(errors)),
        other => ApiError::Engine(other),
    }
}
