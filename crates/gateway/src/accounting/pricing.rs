//! What calls cost: token counts, prices per million tokens, and the pricing table (the
//! config's `[[pricing]]`, the admin API's overrides, then built-in defaults, by prefix).

use std::collections::BTreeMap;

/// Input and output tokens of one call, and whether llmux had to estimate them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Every prompt token, cached ones included.
    pub input: u64,
    /// Every generated token, reasoning included.
    pub output: u64,
    pub estimated: bool,
    /// Of `input`: read from the provider's prompt cache.
    pub cached: u64,
    /// Of `input`: written to the provider's prompt cache.
    pub cache_write: u64,
    /// Of `output`: spent on reasoning.
    pub reasoning: u64,
}

/// Price of one model in USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Prompt tokens read from the provider's cache; `None`: charged as input.
    pub cached_input_per_mtok: Option<f64>,
    /// Prompt tokens written to the provider's cache; `None`: charged as input.
    pub cache_write_per_mtok: Option<f64>,
}

impl Price {
    /// Input and output at their prices; without the cache prices, all input at the input price.
    pub fn new(input_per_mtok: f64, output_per_mtok: f64) -> Price {
        Price {
            input_per_mtok,
            output_per_mtok,
            cached_input_per_mtok: None,
            cache_write_per_mtok: None,
        }
    }

    pub fn cost(&self, t: Tokens) -> f64 {
        // The cache counts are parts of `input`; a broken report cannot make them exceed it.
        let cached = t.cached.min(t.input);
        let write = t.cache_write.min(t.input - cached);
        let plain = t.input - cached - write;
        let per = |n: u64, price: Option<f64>| n as f64 * price.unwrap_or(self.input_per_mtok);
        (plain as f64 * self.input_per_mtok
            + per(cached, self.cached_input_per_mtok)
            + per(write, self.cache_write_per_mtok)
            + t.output as f64 * self.output_per_mtok)
            / 1e6
    }
}

/// One shipped price: model, input, output, cache reads, cache writes (USD per million tokens).
pub type ShippedPrice = (&'static str, f64, f64, Option<f64>, Option<f64>);

/// Shipped list prices, USD per million tokens: input, output, prompt-cache reads and
/// prompt-cache writes (`None`: the provider has no such price, so those tokens cost input).
/// OpenAI: reads at its published cached-input price, no write charge. Anthropic: reads at a
/// tenth of input, writes (5-minute cache) at 1.25×. Gemini: reads at a quarter of input
/// (context caching; storage is billed apart and not here). A model not listed here nor in
/// the config is free — which is what local Ollama models are.
pub const DEFAULT_PRICES: &[ShippedPrice] = &[
    ("gpt-4o", 2.5, 10.0, Some(1.25), None),
    ("gpt-4o-mini", 0.15, 0.6, Some(0.075), None),
    ("gpt-4.1", 2.0, 8.0, Some(0.5), None),
    ("gpt-4.1-mini", 0.4, 1.6, Some(0.1), None),
    ("gpt-4.1-nano", 0.1, 0.4, Some(0.025), None),
    ("o3-mini", 1.1, 4.4, Some(0.55), None),
    ("o4-mini", 1.1, 4.4, Some(0.275), None),
    ("text-embedding-3-small", 0.02, 0.0, None, None),
    ("text-embedding-3-large", 0.13, 0.0, None, None),
    ("claude-sonnet-4", 3.0, 15.0, Some(0.3), Some(3.75)),
    ("claude-opus-4", 15.0, 75.0, Some(1.5), Some(18.75)),
    ("claude-3-5-haiku", 0.8, 4.0, Some(0.08), Some(1.0)),
    ("claude-3-7-sonnet", 3.0, 15.0, Some(0.3), Some(3.75)),
    ("gemini-2.0-flash", 0.1, 0.4, Some(0.025), None),
    ("gemini-2.0-flash-lite", 0.075, 0.3, Some(0.01875), None),
    ("gemini-2.5-flash", 0.3, 2.5, Some(0.075), None),
    ("gemini-2.5-pro", 1.25, 10.0, Some(0.3125), None),
    ("gemini-1.5-pro", 1.25, 5.0, Some(0.3125), None),
    ("gemini-1.5-flash", 0.075, 0.3, Some(0.01875), None),
];

/// Model → price: the shipped defaults, then `[[pricing]]` from the config, then overrides set
/// through the admin API (each layer replaces the one before for the models it names).
#[derive(Clone, Debug, Default)]
pub struct Pricing {
    prices: BTreeMap<String, Price>,
}

impl Pricing {
    pub fn build(config: &[llmux_config::PricingConfig], api: &BTreeMap<String, Price>) -> Pricing {
        let mut prices: BTreeMap<String, Price> = DEFAULT_PRICES
            .iter()
            .map(|&(m, input, output, cached, write)| {
                let price = Price {
                    cached_input_per_mtok: cached,
                    cache_write_per_mtok: write,
                    ..Price::new(input, output)
                };
                (m.to_string(), price)
            })
            .collect();
        for p in config {
            prices.insert(
                p.model.clone(),
                Price {
                    input_per_mtok: p.input_per_mtok,
                    output_per_mtok: p.output_per_mtok,
                    cached_input_per_mtok: p.cached_input_per_mtok,
                    cache_write_per_mtok: p.cache_write_per_mtok,
                },
            );
        }
        for (m, p) in api {
            prices.insert(m.clone(), *p);
        }
        Pricing { prices }
    }

    /// The price of `model`: an exact entry, else the longest entry that prefixes it followed
    /// by `-`, `:` or `@` (dated snapshots such as `claude-sonnet-4-20250514`), after dropping an
    /// upstream pin (`openai/gpt-4o`) and Ollama's `:latest`. `None`: free.
    pub fn price(&self, model: &str) -> Option<Price> {
        let bare = model.split_once('/').map_or(model, |(_, m)| m);
        let bare = bare.strip_suffix(":latest").unwrap_or(bare);
        for m in [model, bare] {
            if let Some(p) = self.prices.get(m) {
                return Some(*p);
            }
        }
        self.prices
            .iter()
            .filter(|(name, _)| {
                bare.strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with(['-', ':', '@']))
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| *p)
    }

    pub fn entries(&self) -> &BTreeMap<String, Price> {
        &self.prices
    }
}

/// Tokens a byte count stands for when the upstream reports none (about 4 bytes a token).
pub fn estimate_tokens(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cached_tokens_at_their_own_prices() {
        let t = Tokens {
            input: 1_000_000,
            output: 0,
            cached: 600_000,
            cache_write: 100_000,
            ..Tokens::default()
        };
        // Without cache prices, every input token at the input price.
        assert!((Price::new(3.0, 15.0).cost(t) - 3.0).abs() < 1e-9);
        let p = Price {
            cached_input_per_mtok: Some(0.3),
            cache_write_per_mtok: Some(3.75),
            ..Price::new(3.0, 15.0)
        };
        let want = 0.3 * 3.0 + 0.6 * 0.3 + 0.1 * 3.75;
        assert!((p.cost(t) - want).abs() < 1e-9, "{}", p.cost(t));
        // A report whose parts exceed the whole is charged for the whole at most.
        let broken = Tokens {
            input: 10,
            cached: 1_000,
            cache_write: 1_000,
            ..Tokens::default()
        };
        assert!((p.cost(broken) - 10.0 * 0.3 / 1e6).abs() < 1e-12);
        let build = Pricing::build(
            &[llmux_config::PricingConfig {
                model: "m".into(),
                input_per_mtok: 3.0,
                output_per_mtok: 15.0,
                cached_input_per_mtok: Some(0.3),
                cache_write_per_mtok: None,
            }],
            &BTreeMap::new(),
        );
        assert_eq!(build.price("m").unwrap().cached_input_per_mtok, Some(0.3));
    }

    #[test]
    fn prices_by_prefix() {
        let p = Pricing::build(&[], &BTreeMap::new());
        assert_eq!(p.price("gpt-4o").unwrap().input_per_mtok, 2.5);
        assert_eq!(p.price("gpt-4o-mini").unwrap().input_per_mtok, 0.15);
        assert_eq!(p.price("gpt-4o-2024-08-06").unwrap().input_per_mtok, 2.5);
        assert_eq!(p.price("openai/gpt-4o-mini").unwrap().output_per_mtok, 0.6);
        assert_eq!(
            p.price("claude-sonnet-4-20250514").unwrap().output_per_mtok,
            15.0
        );
        assert!(p.price("llama3").is_none());
        assert!(p.price("gpt-4omni").is_none());
        let cost = p.price("gpt-4o").unwrap().cost(Tokens {
            input: 1_000_000,
            output: 100_000,
            estimated: false,
            ..Tokens::default()
        });
        assert!((cost - 3.5).abs() < 1e-9);
    }
}
