//! `POST /login`, and what keeps it from being a lever against the whole process: sign-in
//! attempts limited per client IP and failures per user (429 + `Retry-After`), and a short
//! queue in front of the bounded password hashing (503 + `Retry-After` beyond it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use llmux_config::Secret;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::time::rfc3339_ms;
use crate::ControlPlane;

/// Sign-in attempts one client IP may make per [`WINDOW`], right or wrong.
pub const IP_ATTEMPTS_PER_WINDOW: u32 = 30;
/// Failed sign-ins one username may take per [`WINDOW`]; after that even the right password
/// waits for the window to end (otherwise the limit would be an oracle).
pub const USER_FAILURES_PER_WINDOW: u32 = 10;
/// The window of both limits.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Sign-ins that may wait for a hashing slot (beyond those hashing); more get 503 at once.
pub const HASH_QUEUE: usize = 8;
/// Counters kept before expired ones are swept (bounds the memory of a flood of names).
const SWEEP_AT: usize = 4096;
/// Counters kept at most; past that, new IPs and names are refused until the window ends.
const MAX_TRACKED: usize = 65_536;
/// The largest login body read.
const MAX_BODY: usize = 16 * 1024;

/// Fixed-window counters by key.
#[derive(Default)]
struct Windows(HashMap<String, (Instant, u32)>);

impl Windows {
    /// The count of `key` in its current window, and when that window ends.
    fn current(&mut self, key: &str, now: Instant) -> (u32, Instant) {
        match self.0.get(key) {
            Some(&(start, n)) if now < start + WINDOW => (n, start + WINDOW),
            _ => (0, now + WINDOW),
        }
    }

    /// Adds one to `key`; `false` when the table is full of live counters.
    fn add(&mut self, key: &str, now: Instant) -> bool {
        if !self.0.contains_key(key) && self.0.len() >= SWEEP_AT {
            self.0.retain(|_, (start, _)| now < *start + WINDOW);
            if self.0.len() >= MAX_TRACKED {
                return false;
            }
        }
        let entry = self.0.entry(key.to_owned()).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        true
    }
}

/// The sign-in limits of one instance (in memory: a flood is local to the instance it hits).
#[derive(Default)]
pub struct Throttle {
    ips: Mutex<Windows>,
    users: Mutex<Windows>,
    /// Sign-ins between admission and the end of their password check.
    in_flight: AtomicUsize,
}

/// Why a sign-in is turned away before any hashing.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// 429: too many attempts; retry after this long.
    Limited(&'static str, Duration),
    /// 503: the hashing queue is full.
    Busy,
}

/// Holds a place in the hashing queue until dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Throttle {
    /// Counts an attempt from `ip` for `username` and admits it, or says why not.
    fn admit(&self, ip: Option<IpAddr>, username: &str, now: Instant) -> Result<Slot<'_>, Refusal> {
        let user_key = username.to_lowercase();
        if let Ok(mut users) = self.users.lock() {
            let (failures, ends) = users.current(&user_key, now);
            if failures >= USER_FAILURES_PER_WINDOW {
                return Err(Refusal::Limited(
                    "too many failed sign-ins for this user",
                    ends - now,
                ));
            }
        }
        if let (Some(ip), Ok(mut ips)) = (ip, self.ips.lock()) {
            let key = ip.to_string();
            let (attempts, ends) = ips.current(&key, now);
            if attempts >= IP_ATTEMPTS_PER_WINDOW {
                return Err(Refusal::Limited(
                    "too many sign-ins from this address",
                    ends - now,
                ));
            }
            if !ips.add(&key, now) {
                return Err(Refusal::Limited("too many sign-ins", WINDOW));
            }
        }
        let queued = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(&self.in_flight);
        if queued >= llmux_store::hashing_permits() + HASH_QUEUE {
            return Err(Refusal::Busy);
        }
        Ok(slot)
    }

    /// Counts a failed sign-in against `username`; the one that reaches the limit is logged.
    fn failed(&self, username: &str, now: Instant) {
        let key = username.to_lowercase();
        if let Ok(mut users) = self.users.lock() {
            users.add(&key, now);
            if users.current(&key, now).0 == USER_FAILURES_PER_WINDOW {
                tracing::warn!(
                    user = %username,
                    failures = USER_FAILURES_PER_WINDOW,
                    "admin sign-in locked for this user until the minute ends"
                );
            }
        }
    }
}

/// Body of `POST /login`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
}

fn refused(refusal: Refusal) -> Response {
    let (status, message, retry) = match refusal {
        Refusal::Limited(what, retry) => {
            let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
            (
                StatusCode::TOO_MANY_REQUESTS,
                format!("{what}: try again in {}s", secs.max(1)),
                secs.max(1),
            )
        }
        Refusal::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many sign-ins in progress: try again in 1s".to_owned(),
            1,
        ),
    };
    (
        status,
        [(header::RETRY_AFTER, retry.to_string())],
        Json(json!({ "error": { "message": message } })),
    )
        .into_response()
}

/// `POST /login`: a JWT valid for 12 hours, bound to the user's id and session epoch.
pub async fn login(State(cp): State<Arc<ControlPlane>>, req: Request) -> Response {
    let ip = llmux_gateway::limits::client_addr(&req, &cp.gateway.config().limits);
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::BadRequest(format!("login body larger than {MAX_BODY} bytes"))
                .into_response()
        }
    };
    let req: Login = match crate::parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let slot = match cp.login.admit(ip, &req.username, Instant::now()) {
        Ok(slot) => slot,
        Err(refusal) => {
            // Debug only: a flood would otherwise flood the log too. A user's lockout is
            // logged once, when it starts (`Throttle::failed`).
            tracing::debug!(user = %req.username, ip = ?ip, ?refusal, "admin sign-in refused");
            return refused(refusal);
        }
    };
    let verified = cp
        .store
        .verify_password(&req.username, &Secret::new(req.password))
        .await;
    drop(slot);
    let user = match verified {
        Ok(Some(user)) => user,
        Ok(None) => {
            cp.login.failed(&req.username, Instant::now());
            return ApiError::Unauthorized("invalid username or password".into()).into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let now = llmux_store::now_ms() / 1000;
    let claims = crate::jwt::Claims {
        sub: user.username.clone(),
        role: user.role.as_str().to_owned(),
        iat: now,
        exp: now + crate::jwt::TOKEN_TTL_SECS,
        uid: user.id.clone(),
        ver: user.session_epoch,
    };
    let token = crate::jwt::sign(&cp.jwt_secret, &claims);
    tracing::info!(user = %user.username, "admin login");
    Json(json!({
        "token": token,
        "token_type": "Bearer",
        "expires_at": rfc3339_ms(claims.exp * 1000),
        "role": user.role.as_str(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn failures_per_user_then_429_until_the_window_ends() {
        let t = Throttle::default();
        for i in 0..USER_FAILURES_PER_WINDOW {
            // From many addresses: the per-user limit does not depend on the IP.
            let from = ip(&format!("10.0.0.{i}"));
            let slot = t.admit(from, "Alice", Instant::now()).unwrap();
            drop(slot);
            t.failed("Alice", Instant::now());
        }
        tokio::time::advance(Duration::from_secs(20)).await;
        let refusal = t.admit(ip("10.9.9.9"), "alice", Instant::now()).err();
        assert_eq!(
            refusal,
            Some(Refusal::Limited(
                "too many failed sign-ins for this user",
                Duration::from_secs(40)
            ))
        );
        assert!(t.admit(ip("10.9.9.9"), "bob", Instant::now()).is_ok());
        tokio::time::advance(Duration::from_secs(41)).await;
        assert!(t.admit(ip("10.9.9.9"), "alice", Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_per_ip() {
        let t = Throttle::default();
        for i in 0..IP_ATTEMPTS_PER_WINDOW {
            assert!(t
                .admit(ip("192.0.2.1"), &format!("u{i}"), Instant::now())
                .is_ok());
        }
        let refusal = t.admit(ip("192.0.2.1"), "x", Instant::now()).err();
        assert!(
            matches!(refusal, Some(Refusal::Limited(_, _))),
            "{refusal:?}"
        );
        assert!(t.admit(ip("192.0.2.2"), "x", Instant::now()).is_ok());
        tokio::time::advance(WINDOW).await;
        assert!(t.admit(ip("192.0.2.1"), "x", Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_hashing_queue_answers_busy() {
        let t = Throttle::default();
        let capacity = llmux_store::hashing_permits() + HASH_QUEUE;
        let slots: Vec<_> = (0..capacity)
            .map(|i| t.admit(None, &format!("u{i}"), Instant::now()).unwrap())
            .collect();
        assert_eq!(
            t.admit(None, "late", Instant::now()).err(),
            Some(Refusal::Busy)
        );
        drop(slots);
        assert!(t.admit(None, "late", Instant::now()).is_ok());
    }

    #[test]
    fn refusals_carry_retry_after() {
        let r = refused(Refusal::Limited("x", Duration::from_millis(1500)));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        let r = refused(Refusal::Busy);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
