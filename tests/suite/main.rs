//! The integration tests, as one test binary: each of these modules linked on its own would link
//! faer again, which dominated the suite's time.

mod common;

mod checkpoint;
mod cli;
mod cluster;
mod e2e;
mod engine;
mod props;
mod repair;
mod report;
mod spectral;
mod terminal;
mod topk;
mod tui;
