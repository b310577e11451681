//! The response cache's Redis backend (`[cache] backend = "redis"`, docs/cache.md): one
//! entry per key under `{cluster.prefix}:cache:v1:`, expired by Redis itself (`SET … PX`), so
//! every instance on the same Redis and prefix shares the answers.

use crate::{connect, IO_TIMEOUT};
use llmux_gateway::cache::SharedCache;
use llmux_gateway::limits::BoxFuture;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// Answers in one Redis server.
pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
}

impl RedisCache {
    /// `prefix`: the cluster's (`cluster.prefix`); keys are `{prefix}:cache:v1:{hex}`.
    /// Connects lazily, on the first call. Needs a Tokio runtime.
    pub fn new(url: &str, prefix: &str) -> Result<RedisCache, String> {
        let (_, conn) = connect(url)?;
        Ok(RedisCache {
            conn,
            prefix: format!("{prefix}:cache:v1:"),
        })
    }

    async fn bounded<T>(
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(IO_TIMEOUT * 2, fut).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("Redis did not answer in time".to_string()),
        }
    }
}

impl SharedCache for RedisCache {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>, String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let k = format!("{}{key}", self.prefix);
            let mut get = redis::cmd("GET");
            get.arg(k);
            Self::bounded(get.query_async(&mut conn)).await
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let k = format!("{}{key}", self.prefix);
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut set = redis::cmd("SET");
            set.arg(k).arg(value).arg("PX").arg(ms);
            Self::bounded::<()>(set.query_async(&mut conn)).await
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::print_stderr)]
    use super::*;

    #[tokio::test]
    async fn stores_reads_and_expires() {
        let Ok(url) = std::env::var("LLMUX_TEST_REDIS_URL") else {
            eprintln!("LLMUX_TEST_REDIS_URL is not set: skipping the Redis cache test");
            return;
        };
        let prefix = format!("cachetest{}", std::process::id());
        let c = RedisCache::new(&url, &prefix).unwrap();
        assert_eq!(c.get("k").await.unwrap(), None);
        c.put("k", b"v".to_vec(), Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(c.get("k").await.unwrap(), Some(b"v".to_vec()));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(c.get("k").await.unwrap(), None, "expired by Redis");
    }
}
