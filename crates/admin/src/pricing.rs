//! `/pricing`: the price table in force (shipped defaults, `[[pricing]]`, API overrides), and the
//! overrides, which live in the store's settings and apply at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use llmux_gateway::accounting::Price;
use llmux_store::Store;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::change::{audited, audited_delete};
use crate::error::{ApiError, ApiResult};
use crate::session::Caller;
use crate::{parse_body, ControlPlane};

/// The setting that holds the API's price overrides: `{ model: {input_per_mtok, output_per_mtok} }`.
pub const PRICING_SETTING: &str = "pricing";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceBody {
    input_per_mtok: f64,
    output_per_mtok: f64,
    #[serde(default)]
    cached_input_per_mtok: Option<f64>,
    #[serde(default)]
    cache_write_per_mtok: Option<f64>,
}

/// A stored or answered price, the cache prices only when set.
fn price_json(p: &Price) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("input_per_mtok".into(), json!(p.input_per_mtok));
    out.insert("output_per_mtok".into(), json!(p.output_per_mtok));
    if let Some(c) = p.cached_input_per_mtok {
        out.insert("cached_input_per_mtok".into(), json!(c));
    }
    if let Some(w) = p.cache_write_per_mtok {
        out.insert("cache_write_per_mtok".into(), json!(w));
    }
    out
}

/// The overrides stored through the API.
pub async fn load(store: &Store) -> Result<BTreeMap<String, Price>, llmux_store::StoreError> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(map)) = store.get_setting(PRICING_SETTING).await? {
        for (model, v) in map {
            let num = |k: &str| v.get(k).and_then(Value::as_f64);
            if let (Some(i), Some(o)) = (num("input_per_mtok"), num("output_per_mtok")) {
                let price = Price {
                    cached_input_per_mtok: num("cached_input_per_mtok"),
                    cache_write_per_mtok: num("cache_write_per_mtok"),
                    ..Price::new(i, o)
                };
                out.insert(model, price);
            }
        }
    }
    Ok(out)
}

fn to_json(prices: &BTreeMap<String, Price>) -> Value {
    let map: Map<String, Value> = prices
        .iter()
        .map(|(m, p)| (m.clone(), Value::Object(price_json(p))))
        .collect();
    Value::Object(map)
}

/// `GET /pricing`: every priced model with its source (`default`, `file` or `api`).
pub async fn list(State(cp): State<Arc<ControlPlane>>) -> ApiResult<Json<Value>> {
    let api = load(&cp.store).await?;
    let file = cp.gateway.config().pricing.clone();
    let table = cp.gateway.accounting.pricing();
    let out: Vec<Value> = table
        .entries()
        .iter()
        .map(|(m, p)| {
            let source = if api.contains_key(m) {
                "api"
            } else if file.iter().any(|f| &f.model == m) {
                "file"
            } else {
                "default"
            };
            let mut row = price_json(p);
            row.insert("model".into(), json!(m));
            row.insert("source".into(), json!(source));
            Value::Object(row)
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

async fn save(cp: &ControlPlane, prices: BTreeMap<String, Price>) -> ApiResult<()> {
    cp.store
        .set_setting(PRICING_SETTING, &to_json(&prices))
        .await?;
    cp.gateway
        .accounting
        .set_api_prices(prices, &cp.gateway.config().pricing);
    cp.publish(llmux_store::ChangeKind::Config, None).await;
    Ok(())
}

/// `PUT /pricing/{model}`: set a model's price (USD per million tokens).
pub async fn put(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(model): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: PriceBody = parse_body(&body)?;
    for (field, v) in [
        ("input_per_mtok", Some(req.input_per_mtok)),
        ("output_per_mtok", Some(req.output_per_mtok)),
        ("cached_input_per_mtok", req.cached_input_per_mtok),
        ("cache_write_per_mtok", req.cache_write_per_mtok),
    ] {
        if v.is_some_and(|v| !llmux_config::valid_price(v)) {
            return Err(ApiError::field(field, "must be a price from 0 to 1000000"));
        }
    }
    if model.trim().is_empty() {
        return Err(ApiError::field("model", "must not be empty"));
    }
    // As a call's model is checked: a price for a name no call can use is a mistake.
    if model.len() > 256 || model.chars().any(char::is_control) {
        return Err(ApiError::field(
            "model",
            "must be at most 256 bytes, without control characters",
        ));
    }
    let mut prices = load(&cp.store).await?;
    let before = prices
        .get(&model)
        .map(|p| to_json(&BTreeMap::from([(model.clone(), *p)])));
    let price = Price {
        cached_input_per_mtok: req.cached_input_per_mtok,
        cache_write_per_mtok: req.cache_write_per_mtok,
        ..Price::new(req.input_per_mtok, req.output_per_mtok)
    };
    prices.insert(model.clone(), price);
    save(&cp, prices).await?;
    let mut after = price_json(&price);
    after.insert("model".into(), json!(model));
    after.insert("source".into(), json!("api"));
    let after = Value::Object(after);
    Ok(Json(
        audited(
            &cp,
            &caller,
            "pricing.set",
            ("pricing", &model),
            before,
            after,
        )
        .await,
    ))
}

/// `DELETE /pricing/{model}`: drop the API's override (the file's or the default price returns).
pub async fn delete(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(model): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    let mut prices = load(&cp.store).await?;
    let Some(old) = prices.remove(&model) else {
        return Err(ApiError::NotFound(format!(
            "no price override for model {model:?}"
        )));
    };
    save(&cp, prices).await?;
    let mut before = price_json(&old);
    before.insert("model".into(), json!(model));
    let before = Value::Object(before);
    Ok(audited_delete(&cp, &caller, "pricing.delete", ("pricing", &model), before).await)
}
