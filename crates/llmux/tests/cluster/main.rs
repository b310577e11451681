//! Cluster mode end to end: three (or more) `llmux serve` processes on one PostgreSQL schema
//! and one Redis, with mock upstreams. Each module shows one behaviour of docs/cluster.md and
//! prints what it measured (propagation time, probes per interval, overspend, records lost).
//! The tests take turns (see `common::cluster`); they skip without PostgreSQL and Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

#[path = "../common/mod.rs"]
mod common;

mod catalog;
mod counts;
mod drain;
mod manage;
mod outage;
mod probe;
mod registry;
mod sync;
