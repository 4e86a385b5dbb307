//! BG/NBD (Fader, Hardie and Lee 2005, "Counting your customers the easy way"): purchase
//! counts while alive (Poisson, rates Gamma(r, alpha) across customers) and dropout after each
//! purchase (probability p, Beta(a, b) across customers). Time is in days, so alpha is in days
//! (FHL's weekly alpha is alpha / 7). Formulas as lifetimes' `BetaGeoFitter`.

use super::special::ln_hyp2f1;
#[cfg(test)]
use super::special::{digamma, ln_gamma};

/// One customer's purchase history: x repeat purchases (purchase days after the first),
/// t_x days from the first to the last purchase day, T days from the first purchase day to
/// the end of the observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    pub x: f64,
    pub t_x: f64,
    pub t: f64,
}

/// The model's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

impl Params {
    pub const NAMES: [&'static str; 4] = ["r", "alpha", "a", "b"];

    pub fn from_slice(p: &[f64]) -> Params {
        Params {
            r: p[0],
            alpha: p[1],
            a: p[2],
            b: p[3],
        }
    }

    #[cfg(test)]
    pub fn to_vec(self) -> Vec<f64> {
        vec![self.r, self.alpha, self.a, self.b]
    }
}

/// One customer's log-likelihood and its gradient with respect to (r, alpha, a, b), computed
/// with log-sum-exp so that customers with long histories do not underflow: the reference that
/// the fit's grouped form ([`super::data::BgNbdData`]) is tested against.
#[cfg(test)]
pub fn log_likelihood(p: &Params, h: &History) -> (f64, [f64; 4]) {
    let Params { r, alpha, a, b } = *p;
    let History { x, t_x, t } = *h;
    let a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
    let a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
    let a3 = -(r + x) * (alpha + t).ln();
    let repeat = x > 0.0;
    let a4 = if repeat {
        a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + t_x).ln()
    } else {
        f64::NEG_INFINITY
    };
    let m = a3.max(a4);
    let l = m + ((a3 - m).exp() + (a4 - m).exp()).ln();
    let (w3, w4) = ((a3 - l).exp(), if repeat { (a4 - l).exp() } else { 0.0 });

    let d_psi_ab = digamma(a + b) - digamma(a + b + x);
    let mut g = [
        digamma(r + x) - digamma(r) + alpha.ln() - w3 * (alpha + t).ln(),
        r / alpha - w3 * (r + x) / (alpha + t),
        d_psi_ab,
        d_psi_ab + digamma(b + x) - digamma(b),
    ];
    if repeat {
        g[0] -= w4 * (alpha + t_x).ln();
        g[1] -= w4 * (r + x) / (alpha + t_x);
        g[2] += w4 / a;
        g[3] -= w4 / (b + x - 1.0);
    }
    (a1 + a2 + l, g)
}

/// The odds against being alive at T: P(dropped out after the last purchase) / P(alive),
/// `a / (b + x - 1) ((alpha + T) / (alpha + t_x))^(r + x)`; 0 without repeat purchases.
pub fn dropout_odds(p: &Params, h: &History) -> f64 {
    if h.x == 0.0 {
        return 0.0;
    }
    let log_odds =
        (p.r + h.x) * ((p.alpha + h.t) / (p.alpha + h.t_x)).ln() + (p.a / (p.b + h.x - 1.0)).ln();
    log_odds.exp()
}

/// P(alive at T | x, t_x, T).
pub fn p_alive(p: &Params, h: &History) -> f64 {
    1.0 / (1.0 + dropout_odds(p, h))
}

/// E[purchases in (T, T + horizon] | alive at T, x, T]: the expectation below without the
/// chance of having dropped out, which is all that depends on t_x. `None` where 2F1 cannot be
/// evaluated.
pub fn purchases_if_alive(p: &Params, x: f64, t: f64, horizon: f64) -> Option<f64> {
    if horizon <= 0.0 {
        return Some(0.0);
    }
    let Params { r, alpha, a, b } = *p;
    let (ha, hb, hc) = (r + x, b + x, a + b + x - 1.0);
    let z = horizon / (alpha + t + horizon);
    let ln_hyp = ln_hyp2f1(ha, hb, hc, z)?;
    let first = (a + b + x - 1.0) / (a - 1.0);
    let second = 1.0 - (ln_hyp + (r + x) * ((alpha + t) / (alpha + t + horizon)).ln()).exp();
    Some(first * second)
}

/// E[purchases in (T, T + horizon] | x, t_x, T]: lifetimes'
/// `conditional_expected_number_of_purchases_up_to_time`. `None` where 2F1 cannot be evaluated.
/// The one-customer reference of [`super::predict::predict_all`].
#[cfg(test)]
pub fn expected_purchases(p: &Params, h: &History, horizon: f64) -> Option<f64> {
    Some(purchases_if_alive(p, h.x, h.t, horizon)? * p_alive(p, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Params = Params {
        r: 0.2426,
        alpha: 4.4136 * 7.0,
        a: 0.7929,
        b: 2.4259,
    };

    #[test]
    fn gradient_matches_finite_differences() {
        for h in [
            History {
                x: 0.0,
                t_x: 0.0,
                t: 200.0,
            },
            History {
                x: 1.0,
                t_x: 30.0,
                t: 270.0,
            },
            History {
                x: 14.0,
                t_x: 250.0,
                t: 260.0,
            },
            History {
                x: 300.0,
                t_x: 20_000.0,
                t: 36_500.0,
            },
        ] {
            let (_, g) = log_likelihood(&P, &h);
            let base = P.to_vec();
            for k in 0..4 {
                let step = 1e-6 * base[k];
                let (mut up, mut down) = (base.clone(), base.clone());
                up[k] += step;
                down[k] -= step;
                let fd = (log_likelihood(&Params::from_slice(&up), &h).0
                    - log_likelihood(&Params::from_slice(&down), &h).0)
                    / (2.0 * step);
                assert!(
                    (g[k] - fd).abs() <= 1e-5 * fd.abs().max(1e-3),
                    "{h:?} {}: {} vs {fd}",
                    Params::NAMES[k],
                    g[k]
                );
            }
        }
    }

    #[test]
    fn a_customer_with_no_repeat_is_alive_and_a_huge_history_stays_finite() {
        let new = History {
            x: 0.0,
            t_x: 0.0,
            t: 100.0,
        };
        assert_eq!(p_alive(&P, &new), 1.0);
        let e = expected_purchases(&P, &new, 360.0).unwrap();
        assert!(e > 0.0 && e < 5.0, "{e}");
        // Decades observed, thousands of purchases: every figure finite.
        let old = History {
            x: 5000.0,
            t_x: 36_000.0,
            t: 36_500.0,
        };
        let (ll, g) = log_likelihood(&P, &old);
        assert!(
            ll.is_finite() && g.iter().all(|v| v.is_finite()),
            "{ll} {g:?}"
        );
        let alive = p_alive(&P, &old);
        assert!((0.0..=1.0).contains(&alive));
        let e = expected_purchases(&P, &old, 360.0).unwrap();
        assert!(e.is_finite() && e > 0.0, "{e}");
        // Longer horizons expect more.
        assert!(expected_purchases(&P, &old, 720.0).unwrap() > e);
    }
}
