//! lorascope: find intruder dimensions (Shuttleworth et al., 2024) in fine-tuned weights.
//!
//! The pipeline: [`checkpoint`] (mmap, formats, pairing) → [`spectral`] (SVD, the intruder
//! rule) → [`cache`] (lazy, persistent) → reports and the explorer.

pub mod cache;
pub mod checkpoint;
pub mod demo;
pub mod engine;
pub mod error;
pub mod flags;
pub mod repair;
pub mod report;
pub mod spectral;
pub mod tui;

pub use error::{Error, Result};
