//! `[logs] retention_days`: deletes call-log rows older than that, in small batches, so no
//! delete holds the table for long.

use std::sync::Arc;
use std::time::Duration;

use llmux_gateway::Gateway;
use llmux_store::Store;
use tokio_util::sync::CancellationToken;

/// Rows per DELETE.
const BATCH: i64 = 1000;
/// Pause between batches, so writers get the table in between.
const PAUSE: Duration = Duration::from_millis(50);
/// How often the task looks for old rows.
const EVERY: Duration = Duration::from_secs(600);

/// Runs until `stop`; reads `retention_days` on every round, so a reload applies.
pub async fn run(gw: Arc<Gateway>, store: Store, stop: CancellationToken) {
    loop {
        if let Some(days) = gw.config().logs.retention_days {
            let cutoff = llmux_store::now_ms() - i64::from(days) * 86_400_000;
            let mut deleted = 0;
            loop {
                if stop.is_cancelled() {
                    return;
                }
                match store.delete_calls_before(cutoff, BATCH).await {
                    Ok(0) => break,
                    Ok(n) => {
                        deleted += n;
                        tokio::time::sleep(PAUSE).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "call log retention: delete failed; next round retries");
                        break;
                    }
                }
            }
            if deleted > 0 {
                tracing::info!(rows = deleted, days, "call log retention: old rows deleted");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
