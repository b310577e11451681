//! The routing snapshot: which upstreams serve a model, and the strategy that orders them for one call.

use crate::accounting::Pricing;
use crate::upstream::{Pool, Upstream, UpstreamState};
use llmux_config::{Config, Strategy, UpstreamKind};
use llmux_wire::model::{model_key, same_model, split_pinned, with_model_key};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the control plane adds to the file's config: entities managed through the admin API.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overlay {
    /// Alias → models tried in order (an alias is a model name that stands for others).
    pub aliases: std::collections::BTreeMap<String, Vec<String>>,
    /// Models not to serve: `(Some(upstream), model)` on one upstream, `(None, model)` anywhere.
    pub disabled_models: Vec<(Option<String>, String)>,
    /// Names of upstreams managed through the admin API (the rest come from the file).
    pub api_upstreams: std::collections::BTreeSet<String>,
    /// Renamed models: `(upstream or None for every upstream, original name, new name)`. The
    /// new name answers (and is listed); the original is what is sent upstream, and stops
    /// answering by itself.
    pub renames: Vec<(Option<String>, String, String)>,
    /// Upstreams drained for maintenance: no new call goes to them (their calls in flight
    /// finish); probes and discovery go on. A runtime switch kept in the store.
    pub drained: std::collections::BTreeSet<String>,
}

/// Where a drained upstream stands: new calls stopped, and whether calls are still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// Drained, with calls still in flight (here or, in a cluster, on another instance).
    Draining,
    /// Drained, and no call left: safe to stop for maintenance.
    Drained,
}

impl Drain {
    pub fn as_str(self) -> &'static str {
        match self {
            Drain::Draining => "draining",
            Drain::Drained => "drained",
        }
    }
}

/// Immutable once built; swapped whole when the configuration changes.
pub struct Routes {
    pub config: Arc<Config>,
    pub overlay: Arc<Overlay>,
    pub upstreams: Vec<Arc<Upstream>>,
    by_name: HashMap<String, usize>,
    /// `(upstream or "", model key)` pairs switched off through the admin API.
    disabled: std::collections::HashSet<(String, String)>,
    /// New name's key → `(upstream or "", original key)` of each renamed model it stands for.
    renamed_to: HashMap<String, Vec<(String, String)>>,
    /// `(upstream or "", original key)` → the new name: originals answer only by that name.
    renamed_from: HashMap<(String, String), String>,
    /// The catalogue's normalisation rules (`[catalog] normalize`).
    rules: llmux_wire::model::Rules,
    pub strategy: Strategy,
    /// Rotates the starting point among equals so ties spread instead of piling onto the first node.
    cursor: AtomicUsize,
}

/// One way to serve a call: this upstream, under this model name.
#[derive(Clone)]
pub struct Candidate {
    pub upstream: Arc<Upstream>,
    /// The model name sent upstream: the requested one without a pin prefix, or for
    /// OpenAI-style upstreams the exact name they listed.
    pub model: String,
    pub warm: bool,
    /// 0: ready; 1: in the standby pool, or not probed yet; 2: breaker open or no usable key. Lower tiers go first;
    /// higher ones stay in the plan as a last resort, never dropped.
    pub tier: u8,
}

/// Why a model could not be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// No upstream serves it.
    UnknownModel(String),
    /// `upstream/model` named an upstream that does not serve that model.
    NotOnUpstream { upstream: String, model: String },
    /// Upstreams serve it, but none can take this kind of call (e.g. embeddings from an Anthropic upstream).
    Incompatible {
        model: String,
        upstreams: Vec<String>,
    },
    /// Only drained upstreams serve it (taken out of rotation for maintenance).
    Drained {
        model: String,
        upstreams: Vec<String>,
    },
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::UnknownModel(m) => write!(f, "model '{m}' not found"),
            RouteError::NotOnUpstream { upstream, model } => {
                write!(f, "model '{model}' not found on upstream '{upstream}'")
            }
            RouteError::Incompatible { model, upstreams } => write!(
                f,
                "model '{model}' is served only by upstreams that cannot take this kind of call ({})",
                upstreams.join(", ")
            ),
            RouteError::Drained { model, upstreams } => write!(
                f,
                "no upstream available for model '{model}': it is served only by upstreams \
                 drained for maintenance ({})",
                upstreams.join(", ")
            ),
        }
    }
}

impl Routes {
    pub fn new(config: Arc<Config>, upstreams: Vec<Arc<Upstream>>) -> Routes {
        Routes::with_overlay(config, Arc::new(Overlay::default()), upstreams)
    }

    pub fn with_overlay(
        config: Arc<Config>,
        overlay: Arc<Overlay>,
        upstreams: Vec<Arc<Upstream>>,
    ) -> Routes {
        let by_name = upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.clone(), i))
            .collect();
        let disabled = overlay
            .disabled_models
            .iter()
            .map(|(u, m)| (u.clone().unwrap_or_default(), model_key(m).into_owned()))
            .collect();
        let mut renamed_to: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut renamed_from = HashMap::new();
        for (up, original, new) in &overlay.renames {
            let from = (
                up.clone().unwrap_or_default(),
                model_key(original).into_owned(),
            );
            renamed_to
                .entry(model_key(new).into_owned())
                .or_default()
                .push(from.clone());
            renamed_from.insert(from, new.clone());
        }
        Routes {
            rules: rules_of(&config.catalog),
            renamed_to,
            renamed_from,
            strategy: config.routing.strategy,
            config,
            overlay,
            upstreams,
            by_name,
            disabled,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Where an upstream's definition comes from: `file` or `api`.
    pub fn source(&self, upstream: &str) -> &'static str {
        if self.overlay.api_upstreams.contains(upstream) {
            "api"
        } else {
            "file"
        }
    }

    /// The models to try for `requested`, in order: an alias's targets, or the model itself;
    /// each followed by its configured fallbacks.
    pub fn chain(&self, requested: &str) -> Vec<String> {
        self.chain_priced(requested, None)
    }

    /// [`Routes::chain`]; with the `cheapest` strategy and `pricing`, an alias's targets go
    /// cheapest first: each is ranked by its cheapest ready deployment, targets nothing ready
    /// serves last (the order among equals is the alias's). Fallbacks stay behind their target.
    pub fn chain_priced(&self, requested: &str, pricing: Option<&Pricing>) -> Vec<String> {
        let mut heads: Vec<String> = match self.overlay.aliases.get(requested) {
            Some(targets) => targets.clone(),
            None => vec![requested.to_string()],
        };
        if let Some(p) = pricing.filter(|_| self.strategy == Strategy::Cheapest && heads.len() > 1)
        {
            let cheapest = |head: &String| {
                self.plan_with(head, |_| true, None, Some(p))
                    .ok()
                    .and_then(|c| c.first().filter(|c| c.tier == 0).map(|c| price_units(p, c)))
                    .unwrap_or(u64::MAX)
            };
            let mut keyed: Vec<(u64, String)> =
                heads.into_iter().map(|h| (cheapest(&h), h)).collect();
            keyed.sort_by_key(|(price, _)| *price);
            heads = keyed.into_iter().map(|(_, h)| h).collect();
        }
        let mut out: Vec<String> = Vec::with_capacity(heads.len() + 2);
        for head in heads {
            let fallbacks = self.fallbacks(&head).to_vec();
            for m in std::iter::once(head).chain(fallbacks) {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name).and_then(|&i| self.upstreams.get(i))
    }

    /// Whether `upstream` is drained (no new call goes to it).
    pub fn is_drained(&self, upstream: &str) -> bool {
        self.overlay.drained.contains(upstream)
    }

    /// The drain state of `up`: `None` when it takes calls. Drained once no call is in flight
    /// on it here or (in a cluster) on the other instances.
    pub fn drain_state(&self, up: &Upstream) -> Option<Drain> {
        self.is_drained(&up.name)
            .then(|| match up.cluster_active_requests() {
                0 => Drain::Drained,
                _ => Drain::Draining,
            })
    }

    /// Every upstream that can serve `requested` through `accepts`, ordered by the strategy:
    /// active ones first, then standby ones as a last resort.
    pub fn plan(
        &self,
        requested: &str,
        accepts: impl Fn(UpstreamKind) -> bool,
        affinity: Option<u64>,
    ) -> Result<Vec<Candidate>, RouteError> {
        self.plan_with(requested, accepts, affinity, None)
    }

    /// [`Routes::plan`] with the price table the `cheapest` strategy ranks by (without one,
    /// `cheapest` orders as `least_active`).
    pub fn plan_with(
        &self,
        requested: &str,
        accepts: impl Fn(UpstreamKind) -> bool,
        affinity: Option<u64>,
        pricing: Option<&Pricing>,
    ) -> Result<Vec<Candidate>, RouteError> {
        let (pin, model) = split_pinned(requested, |p| self.by_name.contains_key(p));
        let mut found = Vec::with_capacity(self.upstreams.len());
        let mut incompatible = Vec::new();
        let mut drained = Vec::new();
        // Exact names first; normalised ones only when nothing matched exactly anywhere, and
        // dated snapshots only when nothing matched by normalised name either.
        for tier in [Match::Exact, Match::Normalized, Match::Undated] {
            if tier != Match::Exact && !self.rules.any() {
                break;
            }
            if tier == Match::Undated && !self.rules.dated_snapshots {
                break;
            }
            for upstream in &self.upstreams {
                if pin.is_some_and(|p| p != upstream.name) {
                    continue;
                }
                let state = upstream.state();
                let Some(upstream_model) = self.served(upstream, &state, model, tier) else {
                    continue;
                };
                if !accepts(upstream.kind) {
                    incompatible.push(upstream.name.clone());
                    continue;
                }
                if self.is_drained(&upstream.name) {
                    drained.push(upstream.name.clone());
                    continue;
                }
                let tier = tier_of(upstream, &state);
                found.push(Candidate {
                    upstream: Arc::clone(upstream),
                    warm: with_model_key(&upstream_model, |k| state.loaded.contains(k)),
                    model: upstream_model,
                    tier,
                });
            }
            if !found.is_empty() || !incompatible.is_empty() || !drained.is_empty() {
                break;
            }
        }
        if found.is_empty() {
            return Err(match (pin, incompatible.is_empty()) {
                (_, true) if !drained.is_empty() => RouteError::Drained {
                    model: model.to_string(),
                    upstreams: drained,
                },
                (_, false) => RouteError::Incompatible {
                    model: model.to_string(),
                    upstreams: incompatible,
                },
                (Some(p), true) => RouteError::NotOnUpstream {
                    upstream: p.to_string(),
                    model: model.to_string(),
                },
                (None, true) => RouteError::UnknownModel(requested.to_string()),
            });
        }
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed);
        order_priced(&mut found, self.strategy, turn, pricing);
        if let Some(session) = affinity {
            stick(&mut found, session);
        }
        Ok(found)
    }

    /// The name to send `upstream` for a request of `model`, when it serves that model under
    /// the match `tier` and the model is neither switched off nor renamed away there.
    fn served(
        &self,
        upstream: &Upstream,
        state: &crate::upstream::UpstreamState,
        model: &str,
        tier: Match,
    ) -> Option<String> {
        with_model_key(model, |key| {
            self.served_as(upstream, state, model, key, tier)
        })
    }

    /// [`Self::served`], with `key` the model key of `model`.
    fn served_as(
        &self,
        upstream: &Upstream,
        state: &crate::upstream::UpstreamState,
        model: &str,
        key: &str,
        tier: Match,
    ) -> Option<String> {
        let usable = |served: &str| {
            !self.is_disabled_name(&upstream.name, served)
                && !self.is_disabled(&upstream.name, key)
                && self.renamed(&upstream.name, served).is_none()
        };
        match tier {
            Match::Exact => {
                if let Some(froms) = self.renamed_to.get(key) {
                    let hit = froms.iter().find_map(|(up, original)| {
                        (up.is_empty() || *up == upstream.name)
                            .then(|| state.models.get(original))
                            .flatten()
                    });
                    if let Some(served) = hit {
                        return (!self.is_disabled_name(&upstream.name, served))
                            .then(|| served.clone());
                    }
                }
                let served = state.models.get(key)?;
                if !usable(served) {
                    return None;
                }
                // Ollama resolves `:latest` itself, so it gets the name as asked (no body
                // rewrite); an OpenAI-style server needs its exact name.
                Some(match upstream.kind {
                    UpstreamKind::Ollama => model.to_string(),
                    _ => served.clone(),
                })
            }
            Match::Normalized | Match::Undated => {
                let wanted = llmux_wire::model::normalized_key(model, self.rules);
                let undated = tier == Match::Undated;
                // Several served names may normalise alike (a collision, reported by the admin
                // API and `config check`): the greatest name wins, the newest dated snapshot.
                state
                    .model_list
                    .iter()
                    .filter(|served| {
                        let n = llmux_wire::model::normalized_key(served, self.rules);
                        let n = if undated {
                            llmux_wire::model::undated(&n)
                        } else {
                            Some(n)
                        };
                        n.as_deref() == Some(wanted.as_str()) && usable(served)
                    })
                    .max()
                    .cloned()
            }
        }
    }

    /// Whether the model served as `name` (keyed by Ollama's `:latest` rule) is switched off.
    fn is_disabled_name(&self, upstream: &str, name: &str) -> bool {
        !self.disabled.is_empty() && self.is_disabled(upstream, &model_key(name))
    }

    fn is_disabled(&self, upstream: &str, key: &str) -> bool {
        !self.disabled.is_empty()
            && (self.disabled.contains(&(String::new(), key.to_string()))
                || self
                    .disabled
                    .contains(&(upstream.to_string(), key.to_string())))
    }

    /// The new name of the model `upstream` serves as `served`, when it was renamed.
    pub fn renamed(&self, upstream: &str, served: &str) -> Option<&str> {
        if self.renamed_from.is_empty() {
            return None;
        }
        let key = model_key(served).into_owned();
        self.renamed_from
            .get(&(upstream.to_string(), key.clone()))
            .or_else(|| self.renamed_from.get(&(String::new(), key)))
            .map(String::as_str)
    }

    /// The name clients see for the model `upstream` serves as `served`: its new name when
    /// renamed; `None` when it is switched off (it is then in no listing).
    pub fn listed_name(&self, upstream: &str, served: &str) -> Option<String> {
        if self.is_disabled_name(upstream, served) {
            return None;
        }
        Some(
            self.renamed(upstream, served)
                .map_or_else(|| served.to_string(), str::to_string),
        )
    }

    /// The catalogue's normalisation rules in force.
    pub fn rules(&self) -> llmux_wire::model::Rules {
        self.rules
    }

    /// The fallback chain configured for `requested` (matched by Ollama's `:latest` rule too).
    pub fn fallbacks(&self, requested: &str) -> &[String] {
        let fallbacks = &self.config.routing.fallbacks;
        if let Some(chain) = fallbacks.get(requested) {
            return chain;
        }
        fallbacks
            .iter()
            .find(|(m, _)| same_model(m, requested))
            .map_or(&[], |(_, chain)| chain.as_slice())
    }
}

/// How a requested name matched a served one, tried in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Match {
    /// The name, by Ollama's `:latest` rule (or a rename's new name).
    Exact,
    /// By the normalised key (case, `models/`, provider prefix).
    Normalized,
    /// A dated snapshot, by its undated normalised key.
    Undated,
}

/// The wire crate's rule flags from `[catalog] normalize`.
pub fn rules_of(catalog: &llmux_config::CatalogConfig) -> llmux_wire::model::Rules {
    use llmux_config::NormalizeRule as R;
    llmux_wire::model::Rules {
        case: catalog.has(R::Case),
        gemini_prefix: catalog.has(R::GeminiPrefix),
        provider_prefix: catalog.has(R::ProviderPrefix),
        dated_snapshots: catalog.has(R::DatedSnapshots),
    }
}

/// A candidate's tier (see [`Candidate::tier`]).
fn tier_of(upstream: &Upstream, state: &UpstreamState) -> u8 {
    if !upstream.breaker.is_available()
        || (!upstream.keys.is_empty() && !upstream.keys.has_usable())
    {
        2
    } else if state.pool == Pool::Standby || (state.awaiting_probe && state.last_check.is_none()) {
        // Not yet probed (start-up runs its first round beside the listener): tried after the
        // upstreams known to answer.
        1
    } else {
        0
    }
}

/// Session affinity: among ready candidates, the one with the highest rendezvous score goes
/// first. The score depends only on the session and the upstream's name, so a session keeps
/// its node while that node is ready, and only sessions on a lost node move.
fn stick(cands: &mut [Candidate], session: u64) {
    let best = cands
        .iter()
        .enumerate()
        .filter(|(_, c)| c.tier == 0)
        .max_by_key(|(_, c)| fnv1a(c.upstream.name.as_bytes()) ^ session.rotate_left(17))
        .map(|(i, _)| i);
    if let Some(i) = best {
        cands[..=i].rotate_right(1);
    }
}

/// FNV-1a: stable across processes and restarts (unlike `RandomState`), so affinity survives them.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Finalize so that nearby inputs spread over the whole range.
    crate::splitmix64(h)
}

/// A deployment's price for ranking: input plus output dollars per million tokens, in
/// millionths. Its `upstream/model` entry first, then the model's own; unpriced counts as free,
/// as the call log does.
pub fn price_units(pricing: &Pricing, c: &Candidate) -> u64 {
    let price = pricing.price(&format!("{}/{}", c.upstream.name, c.model));
    price.map_or(0, |p| {
        ((p.input_per_mtok + p.output_per_mtok).max(0.0) * 1e6).round() as u64
    })
}

/// `lowest_latency`'s rank: the probe latency divided by the recent success rate (the breaker's
/// window), in whole milliseconds — the expected time to a good answer when a failed attempt
/// costs about one more try. Unknown latency ranks last; no rate yet counts as 1; the rate is
/// floored at 5 % so a failing node stays ordered by its latency among failing ones.
pub fn latency_score(latency_ms: Option<f64>, success_rate: Option<f64>) -> u64 {
    let Some(ms) = latency_ms else {
        return u64::MAX / 2;
    };
    let rate = success_rate.unwrap_or(1.0).clamp(0.05, 1.0);
    // Whole milliseconds, so probe jitter does not hide a tie that warmth should break.
    (ms.max(0.0) / rate).round().min(1e15) as u64
}

/// Orders candidates for one call. `turn` is a per-call counter: within each run of candidates
/// that compare equal it picks who goes first, so equals take turns.
pub fn order(cands: &mut [Candidate], strategy: Strategy, turn: usize) {
    order_priced(cands, strategy, turn, None);
}

/// [`order`], with the price table `cheapest` ranks by.
pub fn order_priced(
    cands: &mut [Candidate],
    strategy: Strategy,
    turn: usize,
    pricing: Option<&Pricing>,
) {
    if cands.len() < 2 {
        return;
    }
    match strategy {
        Strategy::RoundRobin => sort_rotating(cands, turn, |c| c.tier),
        Strategy::LeastActive => sort_rotating(cands, turn, |c| {
            (c.tier, c.upstream.cluster_active_requests(), !c.warm)
        }),
        Strategy::Cheapest => sort_rotating(cands, turn, |c| {
            let price = pricing.map_or(0, |p| price_units(p, c));
            (c.tier, price, c.upstream.cluster_active_requests(), !c.warm)
        }),
        Strategy::LowestLatency => sort_rotating(cands, turn, |c| {
            let ms = latency_score(
                c.upstream.state().latency_ms,
                c.upstream.breaker.success_rate(),
            );
            // A recent 429 ranks an upstream behind every unthrottled one.
            let throttled = c.upstream.is_throttled();
            (c.tier, throttled, ms, !c.warm)
        }),
        Strategy::Weighted => {
            // Deterministic weighted rotation: over sum(weights) consecutive calls each active
            // candidate comes first exactly `weight` times. The rest follow by weight.
            cands.sort_by_key(|c| (c.tier, std::cmp::Reverse(c.upstream.weight)));
            let active = cands.iter().filter(|c| c.tier == 0).count();
            let total: u64 = cands[..active]
                .iter()
                .map(|c| u64::from(c.upstream.weight))
                .sum();
            if total == 0 {
                return;
            }
            let mut slot = (turn as u64) % total;
            let mut first = 0;
            for (i, c) in cands[..active].iter().enumerate() {
                let w = u64::from(c.upstream.weight);
                if slot < w {
                    first = i;
                    break;
                }
                slot -= w;
            }
            cands[..=first].rotate_right(1);
        }
    }
}

/// Sorts by `key` read once per candidate, then rotates every run of equal keys by `turn`.
///
/// The keys are live counters (in-flight calls, probe state) that other calls change while a
/// sort runs; compared afresh on each comparison they can contradict each other, and the
/// standard sort panics on an inconsistent order. A snapshot cannot contradict itself.
/// Rotating each run of equals (rather than the whole list before sorting) gives every member
/// of a tie the same share, however many worse candidates follow it.
fn sort_rotating<K: Ord>(cands: &mut [Candidate], turn: usize, key: impl Fn(&Candidate) -> K) {
    // One allocation per call: each key beside the position it was read from.
    let mut keyed: Vec<(K, usize)> = cands.iter().map(key).zip(0..).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut start = 0;
    while start < keyed.len() {
        let len = keyed[start..]
            .iter()
            .take_while(|e| e.0 == keyed[start].0)
            .count();
        keyed[start..start + len].rotate_left(turn % len);
        start += len;
    }
    permute(cands, &mut keyed);
}

/// Rearranges `items` in place so that position `p` holds what was at `perm[p].1` (following
/// the permutation's cycles; the indices are used up as the visited marks).
fn permute<T, K>(items: &mut [T], perm: &mut [(K, usize)]) {
    for start in 0..perm.len() {
        let mut p = start;
        while perm[p].1 != start && perm[p].1 != p {
            let q = perm[p].1;
            items.swap(p, q);
            perm[p].1 = p;
            p = q;
        }
        perm[p].1 = p;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use llmux_config::{Timeouts, UpstreamConfig};
    use std::collections::HashMap;

    fn upstream(name: &str, kind: UpstreamKind, models: &[&str], weight: u32) -> Arc<Upstream> {
        Arc::new(
            Upstream::new(
                &UpstreamConfig {
                    name: name.into(),
                    kind,
                    url: "http://127.0.0.1:9".into(),
                    keys: Vec::new(),
                    models: Some(models.iter().map(|m| m.to_string()).collect()),
                    weight,
                    timeouts: Timeouts::default(),
                    api_version: None,
                    max_tokens_field: Default::default(),
                    max_output_tokens: Default::default(),
                },
                &llmux_config::RoutingConfig::default(),
            )
            .unwrap(),
        )
    }

    fn routes(strategy: Strategy, ups: Vec<Arc<Upstream>>) -> Routes {
        let mut cfg = Config::default();
        cfg.routing.strategy = strategy;
        Routes::new(Arc::new(cfg), ups)
    }

    fn firsts(r: &Routes, model: &str, calls: usize) -> HashMap<String, usize> {
        let mut count = HashMap::new();
        for _ in 0..calls {
            let plan = r.plan(model, |_| true, None).unwrap();
            *count.entry(plan[0].upstream.name.clone()).or_default() += 1;
        }
        count
    }

    #[test]
    fn drained_upstreams_take_no_new_call() {
        let a = upstream("a", UpstreamKind::Ollama, &["llama3:latest"], 1);
        let b = upstream(
            "b",
            UpstreamKind::Ollama,
            &["llama3:latest", "qwen:latest"],
            1,
        );
        let overlay = Overlay {
            drained: ["b".to_string()].into_iter().collect(),
            ..Overlay::default()
        };
        let r = Routes::with_overlay(Arc::new(Config::default()), Arc::new(overlay), vec![a, b]);
        for _ in 0..4 {
            let plan = r.plan("llama3", |_| true, None).unwrap();
            let names: Vec<&str> = plan.iter().map(|c| c.upstream.name.as_str()).collect();
            assert_eq!(names, ["a"], "a drained node is not even a last resort");
        }
        let only_drained = r.plan("qwen", |_| true, None).err();
        assert_eq!(
            only_drained,
            Some(RouteError::Drained {
                model: "qwen".into(),
                upstreams: vec!["b".into()],
            })
        );
        assert!(only_drained
            .unwrap()
            .to_string()
            .contains("no upstream available"));
        let pinned = r.plan("b/llama3", |_| true, None).err();
        assert!(
            matches!(pinned, Some(RouteError::Drained { .. })),
            "{pinned:?}"
        );
        // Unknown stays unknown: a drain does not hide a typo.
        assert!(matches!(
            r.plan("nope", |_| true, None),
            Err(RouteError::UnknownModel(_))
        ));
        let b = r.upstream("b").unwrap();
        assert_eq!(r.drain_state(b), Some(Drain::Drained));
        let guard = b.begin();
        assert_eq!(r.drain_state(b), Some(Drain::Draining));
        drop(guard);
        assert_eq!(r.drain_state(b), Some(Drain::Drained));
        assert_eq!(r.drain_state(r.upstream("a").unwrap()), None);
    }

    #[test]
    fn only_upstreams_serving_the_model_are_candidates() {
        let a = upstream("a", UpstreamKind::Ollama, &["llama3:latest"], 1);
        let b = upstream(
            "b",
            UpstreamKind::Ollama,
            &["mistral:latest", "llama3:latest"],
            1,
        );
        let r = routes(Strategy::LeastActive, vec![a, b]);
        let plan = r.plan("mistral", |_| true, None).unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].upstream.name, "b");
        assert_eq!(plan[0].model, "mistral");
        assert_eq!(r.plan("llama3", |_| true, None).unwrap().len(), 2);
        assert_eq!(
            r.plan("qwen", |_| true, None).err(),
            Some(RouteError::UnknownModel("qwen".into()))
        );
    }

    #[test]
    fn pinning_and_incompatible_kinds() {
        let a = upstream("gpu-a", UpstreamKind::Ollama, &["llama3:latest"], 1);
        let o = upstream("openai", UpstreamKind::Openai, &["gpt-4o"], 1);
        let r = routes(Strategy::LeastActive, vec![a, o]);
        let plan = r.plan("openai/gpt-4o", |_| true, None).unwrap();
        assert_eq!(plan[0].upstream.name, "openai");
        assert_eq!(plan[0].model, "gpt-4o");
        assert!(matches!(
            r.plan("gpu-a/gpt-4o", |_| true, None),
            Err(RouteError::NotOnUpstream { .. })
        ));
        assert!(matches!(
            r.plan("gpt-4o", |k| k == UpstreamKind::Ollama, None),
            Err(RouteError::Incompatible { .. })
        ));
    }

    #[test]
    fn least_active_prefers_the_idle_node_then_the_warm_one() {
        let a = upstream("a", UpstreamKind::Ollama, &["llama3:latest"], 1);
        let b = upstream("b", UpstreamKind::Ollama, &["llama3:latest"], 1);
        let r = routes(Strategy::LeastActive, vec![Arc::clone(&a), Arc::clone(&b)]);
        let _busy = a.begin();
        for _ in 0..5 {
            assert_eq!(
                r.plan("llama3", |_| true, None).unwrap()[0].upstream.name,
                "b"
            );
        }
        drop(_busy);
        // Equal load: ties alternate...
        let spread = firsts(&r, "llama3", 10);
        assert_eq!(spread.get("a"), Some(&5));
        // ...unless one node has the model loaded.
        a.mark_loaded("llama3");
        assert_eq!(firsts(&r, "llama3", 10).get("a"), Some(&10));
    }

    #[test]
    fn lowest_latency_and_standby_last() {
        let a = upstream("a", UpstreamKind::Ollama, &["m:latest"], 1);
        let b = upstream("b", UpstreamKind::Ollama, &["m:latest"], 1);
        a.update(|s| s.latency_ms = Some(40.0));
        b.update(|s| s.latency_ms = Some(5.0));
        let r = routes(
            Strategy::LowestLatency,
            vec![Arc::clone(&a), Arc::clone(&b)],
        );
        assert_eq!(firsts(&r, "m", 6).get("b"), Some(&6));
        b.mark_down("connection refused");
        let plan = r.plan("m", |_| true, None).unwrap();
        assert_eq!(plan[0].upstream.name, "a");
        assert_eq!(plan[1].tier, 1, "standby nodes stay as a last resort");
    }

    #[test]
    fn round_robin_and_weighted_proportions() {
        let ups = || {
            vec![
                upstream("a", UpstreamKind::Ollama, &["m:latest"], 3),
                upstream("b", UpstreamKind::Ollama, &["m:latest"], 1),
            ]
        };
        let rr = routes(Strategy::RoundRobin, ups());
        let c = firsts(&rr, "m", 8);
        assert_eq!((c["a"], c["b"]), (4, 4));
        let w = routes(Strategy::Weighted, ups());
        let c = firsts(&w, "m", 8);
        assert_eq!((c["a"], c["b"]), (6, 2));
        // Every candidate is still in the plan, for failover.
        assert_eq!(w.plan("m", |_| true, None).unwrap().len(), 2);
    }

    /// In-flight counts change while a plan is sorted. Compared afresh on every comparison they
    /// made the order inconsistent, and with more than 20 candidates the standard sort panics on
    /// that ("user-provided comparison function does not correctly implement a total order").
    #[test]
    fn ordering_while_counters_change_never_panics() {
        let ups: Vec<Arc<Upstream>> = (0..40)
            .map(|i| upstream(&format!("u{i}"), UpstreamKind::Ollama, &["m:latest"], 1))
            .collect();
        let r = routes(Strategy::LeastActive, ups.clone());
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut held = Vec::new();
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    x = crate::splitmix64(x);
                    let u = &ups[(x % 40) as usize];
                    if x & 0x100 == 0 || held.len() > 200 {
                        held.clear();
                    }
                    held.push(u.begin());
                }
            });
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for _ in 0..20_000 {
                    assert_eq!(r.plan("m", |_| true, None).unwrap().len(), 40);
                }
            }));
            stop.store(true, Ordering::Relaxed);
            assert!(outcome.is_ok(), "ordering panicked");
        });
    }

    /// Rotation is among equals only: two warm nodes share the calls evenly even when many
    /// cold ones follow them (rotating the whole list first gave one of them 5 calls in 6).
    #[test]
    fn equals_take_turns_whatever_follows_them() {
        let ups: Vec<Arc<Upstream>> = (0..6)
            .map(|i| upstream(&format!("u{i}"), UpstreamKind::Ollama, &["m:latest"], 1))
            .collect();
        ups[0].mark_loaded("m");
        ups[1].mark_loaded("m");
        let r = routes(Strategy::LeastActive, ups);
        let c = firsts(&r, "m", 12);
        assert_eq!((c.get("u0"), c.get("u1")), (Some(&6), Some(&6)), "{c:?}");
    }

    #[test]
    fn latency_is_weighed_by_the_success_rate() {
        assert_eq!(latency_score(Some(40.0), None), 40);
        assert_eq!(latency_score(Some(40.0), Some(1.0)), 40);
        // Half the calls fail: twice the expected time to a good answer.
        assert_eq!(latency_score(Some(40.0), Some(0.5)), 80);
        // A fast node that fails 80 % of the time ranks behind a slower reliable one...
        assert!(latency_score(Some(10.0), Some(0.2)) > latency_score(Some(30.0), Some(1.0)));
        // ...and a rate of 0 is floored (5 %), keeping failing nodes ordered by latency.
        assert_eq!(latency_score(Some(10.0), Some(0.0)), 200);
        assert!(latency_score(Some(10.0), Some(0.0)) < latency_score(Some(20.0), Some(0.0)));
        assert_eq!(latency_score(None, Some(1.0)), u64::MAX / 2);
    }

    /// The breaker's window feeds `lowest_latency`: the faster node loses its lead once most of
    /// its recent calls failed (without its breaker opening: the rate stays under its threshold
    /// only in count, so the test uses a breaker that never trips).
    #[test]
    fn lowest_latency_ranks_a_failing_fast_node_behind_a_reliable_one() {
        let mut routing = llmux_config::RoutingConfig::default();
        routing.breaker.consecutive_failures = u32::MAX;
        routing.breaker.failure_rate = 1.1;
        let make = |name: &str| {
            let cfg = UpstreamConfig {
                name: name.into(),
                kind: UpstreamKind::Ollama,
                url: "http://127.0.0.1:9".into(),
                keys: Vec::new(),
                models: Some(vec!["m:latest".into()]),
                weight: 1,
                timeouts: Timeouts::default(),
                api_version: None,
                max_tokens_field: Default::default(),
                max_output_tokens: Default::default(),
            };
            Arc::new(Upstream::new(&cfg, &routing).unwrap())
        };
        let (fast, slow) = (make("fast"), make("slow"));
        fast.update(|s| s.latency_ms = Some(10.0));
        slow.update(|s| s.latency_ms = Some(30.0));
        let r = routes(
            Strategy::LowestLatency,
            vec![Arc::clone(&fast), Arc::clone(&slow)],
        );
        assert_eq!(firsts(&r, "m", 4).get("fast"), Some(&4));
        for i in 0..10 {
            slow.breaker.success();
            if i < 8 {
                fast.breaker.failure();
            } else {
                fast.breaker.success();
            }
        }
        assert_eq!(fast.breaker.success_rate(), Some(0.2));
        assert_eq!(slow.breaker.success_rate(), Some(1.0));
        assert_eq!(firsts(&r, "m", 4).get("slow"), Some(&4));
    }

    #[test]
    fn cheapest_ranks_by_price_then_by_calls_in_flight() {
        use crate::accounting::Price;
        let a = upstream("a", UpstreamKind::Openai, &["gpt-4o"], 1);
        let b = upstream("b", UpstreamKind::Openai, &["gpt-4o"], 1);
        let c = upstream("c", UpstreamKind::Openai, &["gpt-4o"], 1);
        let r = routes(
            Strategy::Cheapest,
            vec![Arc::clone(&a), Arc::clone(&b), Arc::clone(&c)],
        );
        let price = Price::new;
        let api = std::collections::BTreeMap::from([
            ("a/gpt-4o".to_string(), price(5.0, 15.0)),
            ("b/gpt-4o".to_string(), price(1.0, 2.0)),
            ("c/gpt-4o".to_string(), price(1.0, 2.0)),
        ]);
        let pricing = Pricing::build(&[], &api);
        let plan = |r: &Routes| {
            r.plan_with("gpt-4o", |_| true, None, Some(&pricing))
                .unwrap()
        };
        let names = |p: Vec<Candidate>| {
            p.iter()
                .map(|c| c.upstream.name.clone())
                .collect::<Vec<_>>()
        };
        // b and c tie on price: the less busy one goes first, a (dearer) always last.
        let _busy = b.begin();
        for _ in 0..4 {
            assert_eq!(names(plan(&r)), ["c", "b", "a"]);
        }
        drop(_busy);
        let _busy = c.begin();
        assert_eq!(names(plan(&r)), ["b", "c", "a"]);
        // A deployment the breaker left out goes behind every ready one, however cheap.
        for _ in 0..5 {
            b.breaker.failure();
            c.breaker.failure();
        }
        assert_eq!(plan(&r)[0].upstream.name, "a");
    }

    #[test]
    fn permute_follows_cycles() {
        let mut items = vec!['a', 'b', 'c', 'd', 'e'];
        permute(
            &mut items,
            &mut [((), 3), ((), 0), ((), 4), ((), 1), ((), 2)],
        );
        assert_eq!(items, vec!['d', 'a', 'e', 'b', 'c']);
    }

    #[test]
    fn in_flight_guard_counts_back_to_zero() {
        let a = upstream("a", UpstreamKind::Ollama, &["m:latest"], 1);
        let guards: Vec<_> = (0..5).map(|_| a.begin()).collect();
        assert_eq!(a.active_requests(), 5);
        drop(guards);
        assert_eq!(a.active_requests(), 0);
    }
}
