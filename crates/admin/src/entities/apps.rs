//! `/apps`: the owners of virtual keys, with their credits and budgets.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use llmux_store::{AppPatch, NewApp};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_name, created, not_found};
use crate::change::{audited, audited_delete};
use crate::error::{ApiError, ApiResult};
use crate::session::Caller;
use crate::time::rfc3339_ms;
use crate::{parse_body, ControlPlane};

/// `POST /apps` and `PATCH /apps/{app}`: on a patch, absent fields keep their value and
/// `null` clears one (no budget; credits not metered). Outer `None`: absent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    credits: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    daily_budget: Option<Option<f64>>,
    #[serde(default, deserialize_with = "present")]
    monthly_budget: Option<Option<f64>>,
}

impl AppBody {
    /// The money fields are each a number in range, or absent, or `null`.
    fn check_money(&self) -> ApiResult<()> {
        check_money("credits", self.credits)?;
        check_money("daily_budget", self.daily_budget)?;
        check_money("monthly_budget", self.monthly_budget)
    }
}

/// A field that is present, as `null` or a number (absent ones get the `default`: `None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// `POST /apps/{app}/credits`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddCredits {
    add: f64,
}

fn app_view(a: &llmux_store::App) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "credits": a.credits,
        "daily_budget": a.daily_budget,
        "monthly_budget": a.monthly_budget,
        "created_at": rfc3339_ms(a.created_at),
    })
}

/// The app with this id or name.
pub(super) async fn find_app(cp: &ControlPlane, id_or_name: &str) -> ApiResult<llmux_store::App> {
    match cp.store.get_app(id_or_name).await {
        Ok(a) => Ok(a),
        Err(llmux_store::StoreError::NotFound) => cp
            .store
            .get_app_by_name(id_or_name)
            .await
            .map_err(not_found("app", id_or_name)),
        Err(e) => Err(e.into()),
    }
}

/// Largest balance, budget or top-up (USD) the API takes. Beyond real money, and it keeps
/// `credits + add` finite: an infinite balance reads back as JSON `null`, i.e. "not metered".
const MAX_MONEY: f64 = 1e12;

fn check_money(field: &str, v: Option<Option<f64>>) -> ApiResult<()> {
    match v.flatten() {
        Some(x) if !x.is_finite() || !(0.0..=MAX_MONEY).contains(&x) => Err(ApiError::field(
            field,
            "must be a number between 0 and 1000000000000",
        )),
        _ => Ok(()),
    }
}

/// A top-up: not zero, and within [`MAX_MONEY`] either way (negative takes credits back).
fn check_top_up(add: f64) -> ApiResult<()> {
    if !add.is_finite() || add == 0.0 || add.abs() > MAX_MONEY {
        return Err(ApiError::field(
            "add",
            "must be a number other than 0, at most 1000000000000 either way (negative takes credits back)",
        ));
    }
    Ok(())
}

/// `GET /apps`.
pub async fn list_apps(State(cp): State<Arc<ControlPlane>>) -> ApiResult<Json<Value>> {
    let list = cp.store.list_apps().await?;
    Ok(Json(Value::Array(list.iter().map(app_view).collect())))
}

/// `GET /apps/{app}`.
pub async fn get_app(
    State(cp): State<Arc<ControlPlane>>,
    Path(app): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(app_view(&find_app(&cp, &app).await?)))
}

/// `POST /apps`.
pub async fn create_app(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: AppBody = parse_body(&body)?;
    let name = req
        .name
        .clone()
        .ok_or_else(|| ApiError::field("name", "required"))?;
    check_name("name", &name)?;
    req.check_money()?;
    let app = cp
        .store
        .create_app(&NewApp {
            name,
            credits: req.credits.flatten(),
            daily_budget: req.daily_budget.flatten(),
            monthly_budget: req.monthly_budget.flatten(),
        })
        .await?;
    let after = app_view(&app);
    let after = audited(&cp, &caller, "app.create", ("app", &app.id), None, after).await;
    Ok(created(after))
}

/// `PATCH /apps/{app}`.
pub async fn patch_app(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: AppBody = parse_body(&body)?;
    let current = find_app(&cp, &app).await?;
    if let Some(name) = &req.name {
        check_name("name", name)?;
    }
    req.check_money()?;
    // Only the fields sent, in one statement: a charge committed since `current` was read
    // must not be overwritten with the balance read then.
    let patch = AppPatch {
        name: req.name,
        credits: req.credits,
        daily_budget: req.daily_budget,
        monthly_budget: req.monthly_budget,
    };
    let updated = cp.store.patch_app(&current.id, &patch).await?;
    // Credits or budgets may have changed: the data plane re-reads them at the app's next call.
    cp.app_changed(&current.id).await;
    let (before, after) = (Some(app_view(&current)), app_view(&updated));
    Ok(Json(
        audited(
            &cp,
            &caller,
            "app.update",
            ("app", &current.id),
            before,
            after,
        )
        .await,
    ))
}

/// `POST /apps/{app}/credits {"add"}`: an atomic top-up (`credits = credits + add`), so it
/// adds to whatever the calls meanwhile left; an app that was not metered starts from `add`.
pub async fn add_credits(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let req: AddCredits = parse_body(&body)?;
    check_top_up(req.add)?;
    let current = find_app(&cp, &app).await?;
    let updated = cp.store.top_up_app(&current.id, req.add).await?;
    cp.app_changed(&current.id).await;
    let (before, after) = (Some(app_view(&current)), app_view(&updated));
    Ok(Json(
        audited(
            &cp,
            &caller,
            "app.credits",
            ("app", &current.id),
            before,
            after,
        )
        .await,
    ))
}

/// `DELETE /apps/{app}`: also deletes its virtual keys.
pub async fn delete_app(
    State(cp): State<Arc<ControlPlane>>,
    Extension(caller): Extension<Caller>,
    Path(app): Path<String>,
) -> ApiResult<StatusCode> {
    let current = find_app(&cp, &app).await?;
    cp.store.delete_app(&current.id).await?;
    cp.key_changed(None).await;
    cp.app_changed(&current.id).await;
    let before = app_view(&current);
    Ok(audited_delete(&cp, &caller, "app.delete", ("app", &current.id), before).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balances_budgets_and_top_ups_are_finite_and_bounded() {
        assert!(check_money("credits", Some(Some(5.0))).is_ok());
        assert!(check_money("credits", Some(None)).is_ok());
        assert!(check_money("credits", Some(Some(-1.0))).is_err());
        assert!(check_money("credits", Some(Some(1e308))).is_err());
        assert!(check_money("daily_budget", Some(Some(2e12))).is_err());
        assert!(check_top_up(5.0).is_ok());
        assert!(check_top_up(-5.0).is_ok());
        assert!(check_top_up(0.0).is_err());
        // Twice 1e308 is infinite: the app would read back as not metered.
        assert!(check_top_up(1e308).is_err());
        assert!(check_top_up(-1e308).is_err());
    }
}
