//! Every admin route in one table, from which both the router and the OpenAPI document are
//! built — so a route cannot exist without its documentation, nor the reverse.
//!
//! Layers, outside-in: authentication (bootstrap token or login JWT; `session::OPEN_PATHS` are
//! the only exceptions) and the viewer-is-read-only rule, then the route. Unknown paths get a
//! JSON 404.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::{
    accounting_api as a, drain as dr, entities as e, ops, pricing as pr, session, upstreams as u,
    ControlPlane,
};

type Handler = MethodRouter<Arc<ControlPlane>>;

/// One admin operation.
struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    tag: &'static str,
    /// JSON Schema of the request body, if it takes one.
    body: Option<Value>,
    /// Status of a successful answer.
    ok: u16,
    handler: Handler,
}

fn op(method: &'static str, path: &'static str, tag: &'static str, summary: &'static str) -> Op {
    let ok = match method {
        "delete" => 204,
        _ => 200,
    };
    Op {
        method,
        path,
        summary,
        tag,
        body: None,
        ok,
        handler: MethodRouter::new(),
    }
}

impl Op {
    fn body(mut self, schema: Value) -> Op {
        self.body = Some(schema);
        self
    }
    fn created(mut self) -> Op {
        self.ok = 201;
        self
    }
    fn to(mut self, handler: Handler) -> Op {
        self.handler = handler;
        self
    }
}

fn s(t: &str) -> Value {
    json!({ "type": t })
}

/// USD, or null for none (no budget; credits not metered).
fn money() -> Value {
    json!({ "type": "number", "nullable": true, "minimum": 0 })
}

fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

fn object(required: &[&str], props: Value) -> Value {
    let mut schema =
        json!({ "type": "object", "properties": props, "additionalProperties": false });
    // OpenAPI 3.0 wants `required` absent rather than empty.
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

fn timeouts() -> Value {
    json!({ "type": "object", "description": "durations like \"5s\": connect, first_byte, idle, total",
            "additionalProperties": { "type": "string" } })
}

/// The table. Paths are relative to `/admin/v1`.
fn ops() -> Vec<Op> {
    let mut table = upstream_ops();
    table.extend(model_ops());
    table.extend(app_ops());
    table.extend(operation_ops());
    table
}

/// `/upstreams` and their provider keys.
// One line per route: the table reads as a table.
#[rustfmt::skip]
fn upstream_ops() -> Vec<Op> {
    let kinds =
        json!({ "type": "string", "enum": ["ollama", "openai", "anthropic", "gemini", "azure"] });
    // The translation options, as in a `[[upstreams]]` table (PATCH: null = the kind's default).
    let limit_field = json!({ "type": "string", "nullable": true, "enum": ["max_tokens", "max_completion_tokens", null] });
    let output_limits = json!({ "type": "object", "nullable": true, "additionalProperties": s("integer") });
    vec![
        op("get", "/upstreams", "upstreams", "Every upstream with its runtime state (pool, breaker, latency, keys)").to(get(u::list)),
        op("post", "/upstreams", "upstreams", "Create an upstream (provider keys are encrypted at rest)")
            .body(object(&["name", "kind", "url"], json!({
                "name": s("string"), "kind": kinds.clone(), "url": s("string"), "keys": strings(),
                "models": strings(), "weight": s("integer"), "timeouts": timeouts(),
                "api_version": s("string"), "enabled": s("boolean"),
                "max_tokens_field": limit_field.clone(), "max_output_tokens": output_limits.clone() })))
            .created().to(post(u::create)),
        op("get", "/upstreams/{name}", "upstreams", "One upstream").to(get(u::get)),
        op("patch", "/upstreams/{name}", "upstreams", "Change an API upstream (file upstreams are read-only)")
            .body(object(&[], json!({
                "kind": kinds, "url": s("string"), "models": strings(), "weight": s("integer"),
                "timeouts": timeouts(), "api_version": s("string"), "enabled": s("boolean"),
                "max_tokens_field": limit_field, "max_output_tokens": output_limits })))
            .to(patch(u::patch)),
        op("delete", "/upstreams/{name}", "upstreams", "Delete an API upstream and its keys").to(delete(u::delete)),
        op("post", "/upstreams/{name}/drain", "upstreams", "Drain for maintenance: no new call goes to it, its calls in flight finish (drain: draining, then drained); kept across reloads and restarts, on every instance").to(post(dr::drain)),
        op("post", "/upstreams/{name}/undrain", "upstreams", "Put a drained upstream back into rotation").to(post(dr::undrain)),
        op("post", "/upstreams/{name}/refresh", "upstreams", "Probe the upstream now (health, models, pool) and answer its state").to(post(u::refresh)),
        op("post", "/upstreams/{name}/keys", "upstreams", "Add a provider key")
            .body(object(&["key"], json!({ "key": s("string") }))).created().to(post(u::add_key)),
        op("delete", "/upstreams/{name}/keys/{key_id}", "upstreams", "Remove a provider key").to(delete(u::delete_key)),
        op("post", "/upstreams/{name}/keys/{key_id}/enable", "upstreams", "Put a disabled key back into rotation now").to(post(u::enable_key)),
        op("post", "/upstreams/{name}/keys/{key_id}/disable", "upstreams", "Take a key out of rotation by hand until it is enabled again").to(post(u::disable_key)),
    ]
}

/// `/models` and `/aliases`.
// One line per route: the table reads as a table.
#[rustfmt::skip]
fn model_ops() -> Vec<Op> {
    vec![
        op("get", "/models", "models", "Stored models and the models upstreams serve now").to(get(e::list_models)),
        op("post", "/models", "models", "Declare a model, or switch one off (enabled=false)")
            .body(object(&["name"], json!({ "name": s("string"), "upstream": s("string"), "enabled": s("boolean") })))
            .created().to(post(e::create_model)),
        op("get", "/models/collisions", "models", "Served model names that normalise alike, and where the shared name routes").to(get(e::collisions)),
        op("post", "/models/batch", "models", "Switch many models on or off, or delete them: one transaction, all or nothing")
            .body(object(&["ids"], json!({ "ids": strings(), "enabled": s("boolean"), "delete": s("boolean") }))).to(post(e::batch_models)),
        op("patch", "/models/{id}", "models", "Switch a model on or off, or rename it (keep_alias: the old name becomes an alias)")
            .body(object(&[], json!({ "enabled": s("boolean"), "name": s("string"), "keep_alias": s("boolean") }))).to(patch(e::patch_model)),
        op("delete", "/models/{id}", "models", "Forget a stored model").to(delete(e::delete_model)),
        op("get", "/aliases", "aliases", "Model aliases").to(get(e::list_aliases)),
        op("post", "/aliases", "aliases", "Create an alias: a model name standing for others, tried in order")
            .body(object(&["name", "targets"], json!({ "name": s("string"), "targets": strings() })))
            .created().to(post(e::create_alias)),
        op("patch", "/aliases/{name}", "aliases", "Replace an alias's targets")
            .body(object(&["targets"], json!({ "targets": strings() }))).to(patch(e::patch_alias)),
        op("delete", "/aliases/{name}", "aliases", "Delete an alias").to(delete(e::delete_alias)),
    ]
}

/// `/apps`, `/keys`, `/users` and `/login`.
// One line per route: the table reads as a table.
#[rustfmt::skip]
fn app_ops() -> Vec<Op> {
    vec![
        op("get", "/apps", "apps", "Apps (owners of virtual keys)").to(get(e::list_apps)),
        op("post", "/apps", "apps", "Create an app (without credits: not metered)")
            .body(object(&["name"], json!({ "name": s("string"), "credits": money(),
                "daily_budget": s("number"), "monthly_budget": s("number") })))
            .created().to(post(e::create_app)),
        op("get", "/apps/{app}", "apps", "One app, by id or name").to(get(e::get_app)),
        op("patch", "/apps/{app}", "apps", "Change the fields sent (null: no budget; credits not metered)")
            .body(object(&[], json!({ "name": s("string"), "credits": money(),
                "daily_budget": money(), "monthly_budget": money() })))
            .to(patch(e::patch_app)),
        op("post", "/apps/{app}/credits", "apps", "Add credits atomically (negative: take back); returns the app")
            .body(object(&["add"], json!({ "add": s("number") })))
            .to(post(e::add_credits)),
        op("delete", "/apps/{app}", "apps", "Delete an app and its keys").to(delete(e::delete_app)),
        op("get", "/keys", "keys", "Virtual keys (never their secret); ?app= filters").to(get(e::list_keys)),
        op("post", "/keys", "keys", "Create a virtual key: the response is the only time the full key is shown")
            .body(object(&["name", "app"], json!({ "name": s("string"), "app": s("string"), "models": strings(),
                "limits": { "type": "object", "properties": { "rpm": s("integer"), "tpm": s("integer"), "concurrency": s("integer"),
                    "models": { "type": "object", "additionalProperties": { "type": "object", "properties": { "rpm": s("integer"), "tpm": s("integer") } } } } },
                "expires_at": { "description": "RFC 3339 or unix seconds", "oneOf": [s("string"), s("integer")] } })))
            .created().to(post(e::create_key)),
        op("get", "/keys/{id}", "keys", "One virtual key").to(get(e::get_key)),
        op("patch", "/keys/{id}", "keys", "Change a virtual key's name, models, limits or expiry")
            .body(object(&[], json!({ "name": s("string"), "models": strings(),
                "limits": s("object"), "expires_at": { "oneOf": [s("string"), s("integer")] } })))
            .to(patch(e::patch_key)),
        op("delete", "/keys/{id}", "keys", "Delete a virtual key").to(delete(e::delete_key)),
        op("post", "/keys/{id}/revoke", "keys", "Revoke a virtual key now").to(post(e::revoke_key)),
        op("post", "/keys/batch", "keys", "Revoke or delete many virtual keys: one transaction, all or nothing")
            .body(object(&["ids", "revoke"], json!({ "ids": strings(), "revoke": s("boolean") }))).to(post(e::batch_keys)),
        op("get", "/users", "users", "Admin users").to(get(e::list_users)),
        op("post", "/users", "users", "Create a user (argon2id password hash)")
            .body(object(&["username", "password", "role"], json!({ "username": s("string"), "password": s("string"),
                "role": { "type": "string", "enum": ["admin", "viewer"] } })))
            .created().to(post(e::create_user)),
        op("patch", "/users/{username}", "users", "Change a user's password or role")
            .body(object(&[], json!({ "password": s("string"), "role": { "type": "string", "enum": ["admin", "viewer"] } })))
            .to(patch(e::patch_user)),
        op("delete", "/users/{username}", "users", "Delete a user").to(delete(e::delete_user)),
        op("post", "/login", "users", "Log in: a bearer token (JWT) valid for 12 hours, until the password or role changes; 429/503 with Retry-After when sign-ins are limited")
            .body(object(&["username", "password"], json!({ "username": s("string"), "password": s("string") })))
            .to(post(crate::login::login)),
    ]
}

/// Routing, config revisions, audit, accounting, logs and this document.
// One line per route: the table reads as a table.
#[rustfmt::skip]
fn operation_ops() -> Vec<Op> {
    vec![
        op("get", "/routing", "routing", "The routing strategy in force and where it comes from").to(get(ops::get_routing)),
        op("put", "/routing", "routing", "Override the strategy (null: back to the file's)")
            .body(json!({ "type": "object", "required": ["strategy"], "properties": { "strategy": {
                "type": "string", "nullable": true,
                "enum": ["least_active", "lowest_latency", "round_robin", "weighted", "cheapest", null] } } }))
            .to(put(ops::put_routing)),
        op("post", "/reload", "config", "Re-read the config file now (400 with the reason when invalid)").to(post(ops::reload)),
        op("get", "/config", "config", "Config source, current revision, last reload error").to(get(ops::get_config)),
        op("get", "/config/revisions", "config", "Applied config revisions, newest first (?limit=&before=)").to(get(ops::list_revisions)),
        op("post", "/config/rollback", "config", "Restore a revision's routing; records a new revision")
            .body(object(&["revision"], json!({ "revision": s("integer") }))).to(post(ops::rollback)),
        op("get", "/audit", "audit", "Audit log, newest first (?limit=&before=); secrets masked").to(get(ops::list_audit)),
        op("get", "/calls", "accounting", "The call log, newest first (?app=&key=&model=&upstream=&status=&error_class=&stream=&cache_hit=&from=&to=&limit=&cursor=)").to(get(a::list_calls)),
        op("get", "/usage", "accounting", "Calls, errors, tokens and cost from the rollups (?from=&to=&group_by=app,model,upstream,hour|day&app=&format=csv)").to(get(a::usage)),
        op("get", "/pricing", "accounting", "The price table in force (USD per million tokens) and where each price comes from").to(get(pr::list)),
        op("put", "/pricing/{model}", "accounting", "Set a model's price (overrides the default and the file)")
            .body(object(&["input_per_mtok", "output_per_mtok"], json!({ "input_per_mtok": s("number"), "output_per_mtok": s("number") })))
            .to(put(pr::put)),
        op("delete", "/pricing/{model}", "accounting", "Drop a price override").to(delete(pr::delete)),
        op("get", "/cluster", "ops", "Instances of the cluster (id, address, version, started, last heartbeat, in-flight, calls/s, prober, live or lost); a single instance lists itself with mode \"single\"").to(get(crate::cluster_api::get_cluster)),
        op("get", "/logs", "ops", "Recent gateway log lines (a ring of 10,000), oldest first (?after=&level=&limit=)").to(get(crate::logring::list)),
        op("get", "/openapi.json", "meta", "This document").to(get(openapi_json)),
    ]
}

/// The admin router (paths relative to `/admin/v1`, where the gateway nests it).
pub fn router(cp: &Arc<ControlPlane>) -> Router {
    let mut router = Router::new();
    for op in ops() {
        router = router.route(op.path, op.handler);
    }
    router
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(cp),
            session::authenticate,
        ))
        .with_state(Arc::clone(cp))
}

async fn not_found(req: Request) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": { "message": format!("no admin route for {} {}", req.method(), req.uri().path()) } })),
    )
        .into_response()
}

async fn openapi_json() -> Json<Value> {
    Json(openapi())
}

/// The OpenAPI 3 document of the admin API, built from the route table.
pub fn openapi() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for op in ops() {
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut responses = Map::new();
        let ok_desc = match op.ok {
            201 => "Created",
            204 => "Done",
            _ => "OK",
        };
        let ok = if op.ok == 204 {
            json!({ "description": ok_desc })
        } else {
            json!({ "description": ok_desc, "content": { "application/json": { "schema": {} } } })
        };
        responses.insert(op.ok.to_string(), ok);
        for (code, desc) in [
            ("400", "Invalid request; the message names the field"),
            ("401", "Missing or invalid credentials"),
            ("403", "Viewer role: read-only"),
            ("404", "Not found"),
            ("409", "Name taken, or declared in the config file"),
        ] {
            responses.insert(code.into(), json!({ "description": desc, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }));
        }
        let mut operation = json!({
            "summary": op.summary,
            "tags": [op.tag],
            "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '.'], "_")),
            "responses": responses,
        });
        if !params.is_empty() {
            operation["parameters"] = Value::Array(params);
        }
        if let Some(schema) = op.body {
            operation["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": schema } } });
        }
        if session::OPEN_PATHS.contains(&op.path) {
            operation["security"] = json!([]);
        }
        let entry = paths.entry(op.path.to_owned()).or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "llmux admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Control plane of the llmux gateway. Authenticate with the bootstrap admin token or a token from POST /login; viewers are read-only.",
        },
        "servers": [{ "url": "/admin/v1" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "object", "required": ["message"], "properties": { "message": { "type": "string" } } } },
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_route_is_documented_once_with_its_path_parameters() {
        let doc = openapi();
        let ops = ops();
        let mut count = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                count += 1;
                let params = path.matches('{').count();
                assert_eq!(
                    operation["parameters"].as_array().map_or(0, Vec::len),
                    params,
                    "{method} {path}"
                );
            }
        }
        assert_eq!(count, ops.len());
    }
}
