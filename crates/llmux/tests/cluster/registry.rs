//! The instance registry; for now, that three instances start as one cluster.

use crate::common::cluster::{Spec, TestCluster};

#[tokio::test]
async fn three_instances_start_in_cluster_mode() {
    let Some(c) = TestCluster::start(Spec::new(3, "")).await else {
        return;
    };
    for node in &c.nodes {
        assert!(
            node.log_text().contains("cluster mode"),
            "{}",
            node.log_text()
        );
    }
}
