//! Gamma-Gamma (Fader, Hardie and Lee 2005, "RFM and CLV"): a customer's spend per purchase
//! is Gamma(p, nu) around their mean, with nu Gamma(q, gamma) across customers. Fitted on
//! customers with repeat purchases and a positive mean; formulas as lifetimes'
//! `GammaGammaFitter`.

#[cfg(test)]
use super::special::{digamma, ln_gamma};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

impl Params {
    pub const NAMES: [&'static str; 3] = ["p", "q", "gamma"];

    pub fn from_slice(v: &[f64]) -> Params {
        Params {
            p: v[0],
            q: v[1],
            gamma: v[2],
        }
    }

    #[cfg(test)]
    pub fn to_vec(self) -> Vec<f64> {
        vec![self.p, self.q, self.gamma]
    }

    /// The population's mean spend per purchase, the expectation for a customer without
    /// repeat purchases (finite for q > 1).
    pub fn population_mean(&self) -> f64 {
        self.gamma * self.p / (self.q - 1.0)
    }
}

/// One customer's log-likelihood, with x repeat purchases of mean amount m (both > 0), and its
/// gradient with respect to (p, q, gamma): the reference that the fit's grouped form
/// ([`super::data::GammaGammaData`]) is tested against.
#[cfg(test)]
pub fn log_likelihood(params: &Params, x: f64, m: f64) -> (f64, [f64; 3]) {
    let Params { p, q, gamma: v } = *params;
    let px = p * x;
    let ll = ln_gamma(px + q) - ln_gamma(px) - ln_gamma(q)
        + q * v.ln()
        + (px - 1.0) * m.ln()
        + px * x.ln()
        - (px + q) * (x * m + v).ln();
    let psi = digamma(px + q);
    let g = [
        x * (psi - digamma(px) + m.ln() + x.ln() - (x * m + v).ln()),
        psi - digamma(q) + v.ln() - (x * m + v).ln(),
        q / v - (px + q) / (x * m + v),
    ];
    (ll, g)
}

/// E[spend per purchase | x, m]: the population mean shrunk toward the customer's own mean
/// by their number of purchases (the population mean for x = 0).
pub fn expected_order_value(params: &Params, x: f64, m: f64) -> f64 {
    let weight = if x > 0.0 {
        params.p * x / (params.p * x + params.q - 1.0)
    } else {
        0.0
    };
    (1.0 - weight) * params.population_mean() + weight * if x > 0.0 { m } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let params = Params {
            p: 6.25,
            q: 3.74,
            gamma: 15.44,
        };
        for (x, m) in [(1.0, 12.5), (7.0, 40.0), (150.0, 3.2)] {
            let (_, g) = log_likelihood(&params, x, m);
            let base = params.to_vec();
            for k in 0..3 {
                let step = 1e-6 * base[k];
                let (mut up, mut down) = (base.clone(), base.clone());
                up[k] += step;
                down[k] -= step;
                let fd = (log_likelihood(&Params::from_slice(&up), x, m).0
                    - log_likelihood(&Params::from_slice(&down), x, m).0)
                    / (2.0 * step);
                assert!(
                    (g[k] - fd).abs() <= 1e-6 * fd.abs().max(1e-3),
                    "x {x} m {m} {}: {} vs {fd}",
                    Params::NAMES[k],
                    g[k]
                );
            }
        }
    }

    #[test]
    fn no_repeat_purchase_expects_the_population_mean() {
        let params = Params {
            p: 6.25,
            q: 3.74,
            gamma: 15.44,
        };
        let mean = params.population_mean();
        assert_eq!(expected_order_value(&params, 0.0, 0.0), mean);
        // Many purchases: close to the customer's own mean.
        let own = expected_order_value(&params, 500.0, 80.0);
        assert!((own - 80.0).abs() < 0.2 && own < 80.0, "{own}");
    }
}
