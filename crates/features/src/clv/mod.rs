//! Customer lifetime value: BG/NBD for purchase counts and survival, Gamma-Gamma for spend per
//! purchase (Fader, Hardie and Lee 2005), fitted by maximum likelihood in Rust.
//!
//! The models live in their own modules ([`bgnbd`], [`gamma_gamma`]) over the special
//! functions they need ([`special`]); [`data`] arranges the customers for fast likelihoods,
//! [`fit`] maximises a likelihood with L-BFGS, and [`predict`] gives every customer's
//! predictions.

pub mod bgnbd;
pub mod data;
pub mod fit;
pub mod gamma_gamma;
pub mod predict;
pub mod special;
pub mod stage;

#[cfg(test)]
mod cdnow_tests;

pub use data::{BgNbdData, GammaGammaData};
