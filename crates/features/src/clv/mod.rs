//! Customer lifetime value: BG/NBD for purchase counts and survival, Gamma-Gamma for spend per
//! purchase (Fader, Hardie and Lee 2005), fitted by maximum likelihood in Rust.
//!
//! The models live in their own modules ([`bgnbd`], [`gamma_gamma`]) over the special
//! functions they need ([`special`]); [`fit`] maximises a likelihood with L-BFGS.

pub mod bgnbd;
pub mod fit;
pub mod gamma_gamma;
pub mod special;
pub mod stage;

#[cfg(test)]
mod cdnow_tests;

use fit::{Likelihood, par_sum};

/// Every customer's history, for the BG/NBD likelihood.
pub struct BgNbdData<'a>(pub &'a [bgnbd::History]);

impl Likelihood for BgNbdData<'_> {
    fn params(&self) -> usize {
        4
    }
    fn customers(&self) -> usize {
        self.0.len()
    }
    fn total(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let p = bgnbd::Params::from_slice(theta);
        par_sum(self.0, 4, |h| {
            let (ll, g) = bgnbd::log_likelihood(&p, h);
            (ll, g.to_vec())
        })
    }
}

/// (repeat purchases, mean repeat amount) of the customers with both positive, for the
/// Gamma-Gamma likelihood.
pub struct GammaGammaData(pub Vec<(f64, f64)>);

impl Likelihood for GammaGammaData {
    fn params(&self) -> usize {
        3
    }
    fn customers(&self) -> usize {
        self.0.len()
    }
    fn total(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let p = gamma_gamma::Params::from_slice(theta);
        par_sum(&self.0, 3, |(x, m)| {
            let (ll, g) = gamma_gamma::log_likelihood(&p, *x, *m);
            (ll, g.to_vec())
        })
    }
}
