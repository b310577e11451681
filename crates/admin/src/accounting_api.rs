//! `/calls` (the call log, filtered and paged) and `/usage` (rollups as JSON or CSV).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use llmux_store::{CallFilter, UsageGroup, UsageQuery, UsageRow};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::time::{parse_rfc3339, rfc3339_ms};
use crate::ControlPlane;

/// Largest page of `/calls`.
const MAX_LIMIT: i64 = 1000;

/// A time parameter: RFC 3339, or unix seconds.
fn time_param(field: &str, v: Option<&str>) -> ApiResult<Option<i64>> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(secs) = v.parse::<i64>() {
        return Ok(Some(secs.saturating_mul(1000)));
    }
    parse_rfc3339(v).map(Some).ok_or_else(|| {
        ApiError::field(
            field,
            "expected RFC 3339 (2025-01-31T00:00:00Z) or unix seconds",
        )
    })
}

/// An app given by id or name, as its id (an unknown name is a 404).
async fn app_id(cp: &ControlPlane, app: Option<&str>) -> ApiResult<Option<String>> {
    let Some(app) = app else { return Ok(None) };
    match cp.store.get_app(app).await {
        Ok(a) => Ok(Some(a.id)),
        Err(llmux_store::StoreError::NotFound) => match cp.store.get_app_by_name(app).await {
            Ok(a) => Ok(Some(a.id)),
            Err(llmux_store::StoreError::NotFound) => {
                Err(ApiError::NotFound(format!("no app {app:?}")))
            }
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CallsQuery {
    app: Option<String>,
    key: Option<String>,
    model: Option<String>,
    upstream: Option<String>,
    status: Option<i64>,
    error_class: Option<String>,
    stream: Option<bool>,
    cache_hit: Option<bool>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /calls`: newest first; `next_cursor` fetches the page after this one.
pub async fn list_calls(
    State(cp): State<Arc<ControlPlane>>,
    Query(q): Query<CallsQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::field("limit", format!("must be 1..={MAX_LIMIT}")));
    }
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            c.split_once('.')
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                .ok_or_else(|| ApiError::field("cursor", "not a cursor from a previous page"))?,
        ),
    };
    let filter = CallFilter {
        app_id: app_id(&cp, q.app.as_deref()).await?,
        virtual_key_id: q.key,
        model: q.model,
        upstream: q.upstream,
        status: q.status,
        error_class: q.error_class.filter(|c| !c.is_empty()),
        stream: q.stream,
        cache_hit: q.cache_hit,
        since: time_param("from", q.from.as_deref())?,
        until: time_param("to", q.to.as_deref())?,
        limit: Some(limit),
        after,
    };
    let rows = cp.store.list_calls(&filter).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| {
            rows.last()
                .map(|r| format!("{}.{}", r.record.created_at, r.id))
        })
        .flatten();
    let calls: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let at = rfc3339_ms(r.record.created_at);
            let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
            v["time"] = Value::String(at);
            v
        })
        .collect();
    Ok(Json(json!({ "calls": calls, "next_cursor": next })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
    app: Option<String>,
    format: Option<String>,
}

/// `group_by`: the dimensions, whether the time buckets are days, and the names as given.
fn group_by(list: &str) -> ApiResult<(UsageGroup, bool, Vec<String>)> {
    let mut group = UsageGroup::default();
    let mut day = false;
    let mut names = Vec::new();
    for g in list.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        match g {
            "app" => group.app = true,
            "model" => group.model = true,
            "upstream" => group.upstream = true,
            "hour" => group.time = true,
            "day" => {
                group.time = true;
                day = true;
            }
            other => {
                return Err(ApiError::field(
                    "group_by",
                    format!("unknown dimension {other:?} (app, model, upstream, hour, day)"),
                ))
            }
        }
        names.push(g.to_owned());
    }
    Ok((group, day, names))
}

/// CSV when `format=csv`, or with no `format` when the client accepts `text/csv`.
fn wants_csv(format: Option<&str>, headers: &HeaderMap) -> ApiResult<bool> {
    match format {
        Some("csv") => Ok(true),
        Some("json") | None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"))),
        Some(other) => Err(ApiError::field(
            "format",
            format!("unknown format {other:?} (json, csv)"),
        )),
    }
}

/// The rows' calls, errors, tokens and cost summed.
fn totals(rows: &[UsageRow]) -> Value {
    rows.iter().fold(
        json!({"calls": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0.0}),
        |mut t, r| {
            for (k, v) in [
                ("calls", r.calls),
                ("errors", r.errors),
                ("input_tokens", r.input_tokens),
                ("output_tokens", r.output_tokens),
            ] {
                t[k] = json!(t[k].as_i64().unwrap_or(0) + v);
            }
            t["cost"] = json!(t["cost"].as_f64().unwrap_or(0.0) + r.cost);
            t
        },
    )
}

/// `GET /usage`: calls, errors, tokens and cost summed over the rollups; `group_by` any of
/// `app`, `model`, `upstream`, and `hour` or `day` (one row per bucket). CSV with
/// `format=csv` or `Accept: text/csv`.
pub async fn usage(
    State(cp): State<Arc<ControlPlane>>,
    headers: HeaderMap,
    Query(p): Query<UsageParams>,
) -> ApiResult<Response> {
    let (group, day, names) = group_by(p.group_by.as_deref().unwrap_or(""))?;
    let csv = wants_csv(p.format.as_deref(), &headers)?;
    let query = UsageQuery {
        from: time_param("from", p.from.as_deref())?,
        to: time_param("to", p.to.as_deref())?,
        day,
        group,
        app_id: app_id(&cp, p.app.as_deref()).await?,
    };
    let rows = cp.store.usage(&query).await?;
    // Grouped by app, each row names its app beside the id (a deleted app's name is gone).
    let app_names: std::collections::HashMap<String, String> = if group.app {
        cp.store
            .list_apps()
            .await?
            .into_iter()
            .map(|a| (a.id, a.name))
            .collect()
    } else {
        Default::default()
    };
    let app_name = |r: &UsageRow| r.app_id.as_ref().and_then(|id| app_names.get(id)).cloned();
    if csv {
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            to_csv(group, &rows, &app_name),
        )
            .into_response());
    }
    let totals = totals(&rows);
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            if group.app {
                v["app"] = json!(app_name(r));
            }
            if let Some(start) = r.start {
                v["start"] = Value::String(rfc3339_ms(start));
            }
            v
        })
        .collect();
    Ok(Json(json!({
        "from": query.from.map(rfc3339_ms),
        "to": query.to.map(rfc3339_ms),
        "group_by": names,
        "rows": rows,
        "totals": totals,
    }))
    .into_response())
}

/// A CSV field, quoted when it needs to be (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn to_csv(
    g: UsageGroup,
    rows: &[UsageRow],
    app_name: &dyn Fn(&UsageRow) -> Option<String>,
) -> String {
    let mut head = Vec::new();
    for (on, name) in [
        (g.time, "start"),
        (g.app, "app_id"),
        (g.app, "app"),
        (g.model, "model"),
        (g.upstream, "upstream"),
    ] {
        if on {
            head.push(name);
        }
    }
    head.extend(["calls", "errors", "input_tokens", "output_tokens", "cost"]);
    let mut out = head.join(",");
    out.push_str("\r\n");
    for r in rows {
        let mut cols = Vec::new();
        if g.time {
            cols.push(r.start.map(rfc3339_ms).unwrap_or_default());
        }
        let name = app_name(r);
        for (on, v) in [
            (g.app, &r.app_id),
            (g.app, &name),
            (g.model, &r.model),
            (g.upstream, &r.upstream),
        ] {
            if on {
                cols.push(field(v.as_deref().unwrap_or("")));
            }
        }
        cols.extend([
            r.calls.to_string(),
            r.errors.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            format!("{}", r.cost),
        ]);
        out.push_str(&cols.join(","));
        out.push_str("\r\n");
    }
    out
}
