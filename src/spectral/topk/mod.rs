//! The top singular vectors of one side without a full SVD, with a residual guarantee:
//! [`krylov`] (restarted block Krylov with Rayleigh–Ritz, for any matrix) and [`lora`] (W0 + s·B·A
//! without forming W, for adapters of a cached base). The engine picks: `lora_top` for an
//! adapter's matrices, `dense_top` for the rest; either returning `None` means the full SVD.

pub mod krylov;
pub mod lora;

pub use krylov::{dense_top, mul, mul_wide, top_eigen, Gram, Params, SymOp, TopEigen};
pub use lora::{lora_top, lora_top_traced, LoraTrace, LoraUpdate, MAX_PROJECTED_RANK};
