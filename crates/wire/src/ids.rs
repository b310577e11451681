//! Ids the codecs make up: answer and tool-call ids an upstream did not give, the `call_N` ids
//! of dialects whose tool calls carry none (and which call a result answers), and the clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh id: `prefix` and 24 random base-62 characters from rand's thread-local generator.
pub(crate) fn new_id(prefix: &str) -> String {
    use rand::RngExt as _;
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    id.extend(
        rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(24)
            .map(char::from),
    );
    id
}

/// Unix seconds now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A short unique token for ids the upstream did not give (Gemini's and Ollama's tool calls).
pub(crate) fn fresh_token() -> String {
    new_id("")
}

struct CallRecord {
    id: String,
    name: String,
    answered: bool,
}

/// Tool-call ids in a request of a dialect whose calls carry none (Gemini, Ollama): calls are
/// numbered `call_0`, `call_1`, … in order (stable from turn to turn, so upstream prompt caches
/// keep hitting), and each result is matched to the call it answers.
#[derive(Default)]
pub(crate) struct CallLedger {
    calls: Vec<CallRecord>,
    next: usize,
}

impl CallLedger {
    fn fresh(&mut self) -> String {
        let id = format!("call_{}", self.next);
        self.next += 1;
        id
    }

    /// A call named `name`: its own `id`, or the next number.
    pub fn call(&mut self, id: Option<String>, name: &str) -> String {
        let id = id.unwrap_or_else(|| self.fresh());
        self.calls.push(CallRecord {
            id: id.clone(),
            name: name.to_string(),
            answered: false,
        });
        id
    }

    /// The id of the call a result answers: the call with the result's `id`, else the earliest
    /// unanswered call of its `name`; failing both, the result's own id or the next number.
    pub fn answer(&mut self, id: Option<&str>, name: Option<&str>) -> String {
        let by_id = id.and_then(|id| self.calls.iter().position(|c| c.id == id));
        let found = by_id.or_else(|| {
            let n = name?;
            self.calls.iter().position(|c| !c.answered && c.name == n)
        });
        if let Some(rec) = found.and_then(|k| self.calls.get_mut(k)) {
            rec.answered = true;
            return rec.id.clone();
        }
        id.map_or_else(|| self.fresh(), str::to_string)
    }
}

/// The name of the latest call with `id` in `names` (call id, name), for a tool result that
/// gives only the id.
pub(crate) fn call_name(names: &[(String, String)], id: &str) -> Option<String> {
    names
        .iter()
        .rev()
        .find(|(cid, _)| cid == id)
        .map(|(_, n)| n.clone())
}
