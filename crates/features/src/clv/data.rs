//! The customers' histories as the likelihoods take them, arranged so that an evaluation costs
//! a few floating-point operations per customer.
//!
//! Both log-likelihoods are sums over customers of terms in Gamma functions of a parameter plus
//! the customer's repeat purchases x (`ln Gamma(r + x)`, `ln Gamma(b + x)`, `ln Gamma(p x + q)`
//! and their digammas), and of logarithms of a parameter plus the customer's times or amounts.
//! x takes a few hundred values among millions of customers, so the Gamma terms are computed
//! once per distinct x and evaluation and weighted by how many customers have it; what remains
//! per customer is two logarithms and an exponential (BG/NBD) or one logarithm (Gamma-Gamma).
//! BG/NBD customers with the same (x, t_x, T) are one weighted row. The results equal the sums
//! of [`bgnbd::log_likelihood`] and [`gamma_gamma::log_likelihood`] over the customers (a test
//! holds them to 1e-12), which remain the one-customer reference.

use super::bgnbd::{self, History};
use super::fit::{Likelihood, par_sum};
use super::gamma_gamma;
use super::special::{digamma, ln_gamma};

/// The distinct values of `keys` (ascending) and, per key, the index of its value.
fn distinct(keys: &[f64]) -> (Vec<f64>, Vec<u32>) {
    let mut values: Vec<f64> = keys.to_vec();
    values.sort_unstable_by(f64::total_cmp);
    values.dedup_by(|a, b| a.total_cmp(b).is_eq());
    let at = keys
        .iter()
        .map(|k| {
            values
                .binary_search_by(|v| v.total_cmp(k))
                .expect("every key is among the distinct values") as u32
        })
        .collect();
    (values, at)
}

/// One weighted row of the BG/NBD data: `weight` customers with this history.
#[derive(Debug, Clone, Copy)]
struct BgRow {
    x_at: u32,
    x: f64,
    t_x: f64,
    t: f64,
    weight: f64,
}

/// Every customer's history, for the BG/NBD likelihood.
pub struct BgNbdData {
    /// The distinct repeat counts, and how many customers have each.
    xs: Vec<f64>,
    x_weights: Vec<f64>,
    rows: Vec<BgRow>,
    customers: usize,
}

impl BgNbdData {
    pub fn new(histories: &[History]) -> Self {
        let mut sorted: Vec<History> = histories.to_vec();
        sorted.sort_unstable_by(|a, b| {
            a.x.total_cmp(&b.x)
                .then(a.t_x.total_cmp(&b.t_x))
                .then(a.t.total_cmp(&b.t))
        });
        let mut grouped: Vec<(History, f64)> = Vec::new();
        for h in sorted {
            match grouped.last_mut() {
                Some((last, weight)) if *last == h => *weight += 1.0,
                _ => grouped.push((h, 1.0)),
            }
        }
        let keys: Vec<f64> = grouped.iter().map(|(h, _)| h.x).collect();
        let (xs, at) = distinct(&keys);
        let mut x_weights = vec![0.0; xs.len()];
        let rows = grouped
            .iter()
            .zip(at)
            .map(|((h, weight), x_at)| {
                x_weights[x_at as usize] += weight;
                BgRow {
                    x_at,
                    x: h.x,
                    t_x: h.t_x,
                    t: h.t,
                    weight: *weight,
                }
            })
            .collect();
        BgNbdData {
            xs,
            x_weights,
            rows,
            customers: histories.len(),
        }
    }
}

impl Likelihood for BgNbdData {
    fn params(&self) -> usize {
        4
    }

    fn customers(&self) -> usize {
        self.customers
    }

    fn total(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let bgnbd::Params { r, alpha, a, b } = bgnbd::Params::from_slice(theta);
        let (ln_alpha, ln_a) = (alpha.ln(), a.ln());
        // Per distinct x: ln Gamma(r + x) - ln Gamma(r) + r ln alpha + ln B(a, b + x) - ln B(a, b)
        // with its derivatives, and ln(b + x - 1) for the dropout term.
        let (lg_r, lg_b, lg_ab) = (ln_gamma(r), ln_gamma(b), ln_gamma(a + b));
        let (dg_r, dg_b, dg_ab) = (digamma(r), digamma(b), digamma(a + b));
        let mut ll = 0.0;
        let mut g = [0.0; 4];
        let mut ln_b1 = Vec::with_capacity(self.xs.len());
        for (&x, &w) in self.xs.iter().zip(&self.x_weights) {
            let d_ab = dg_ab - digamma(a + b + x);
            ll += w
                * (ln_gamma(r + x) - lg_r + r * ln_alpha + lg_ab + ln_gamma(b + x)
                    - lg_b
                    - ln_gamma(a + b + x));
            g[0] += w * (digamma(r + x) - dg_r + ln_alpha);
            g[1] += w * r / alpha;
            g[2] += w * d_ab;
            g[3] += w * (d_ab + digamma(b + x) - dg_b);
            ln_b1.push(if x > 0.0 { (b + x - 1.0).ln() } else { 0.0 });
        }
        // Per row: ln of the sum of the two ways to have been seen last at t_x, by log-sum-exp.
        let (rows_ll, rows_g) = par_sum(&self.rows, |row| {
            let rx = r + row.x;
            let (at, ln_at) = (alpha + row.t, (alpha + row.t).ln());
            let a3 = -rx * ln_at;
            let (l, g) = if row.x > 0.0 {
                let (atx, ln_atx) = (alpha + row.t_x, (alpha + row.t_x).ln());
                let a4 = ln_a - ln_b1[row.x_at as usize] - rx * ln_atx;
                // w3 + w4 = 1: each way's share of the sum.
                let (hi, lo) = if a3 >= a4 { (a3, a4) } else { (a4, a3) };
                let e = (lo - hi).exp();
                let l = hi + e.ln_1p();
                let (w_hi, w_lo) = (1.0 / (1.0 + e), e / (1.0 + e));
                let (w3, w4) = if a3 >= a4 { (w_hi, w_lo) } else { (w_lo, w_hi) };
                (
                    l,
                    [
                        -w3 * ln_at - w4 * ln_atx,
                        -w3 * rx / at - w4 * rx / atx,
                        w4 / a,
                        -w4 / (b + row.x - 1.0),
                    ],
                )
            } else {
                (a3, [-ln_at, -rx / at, 0.0, 0.0])
            };
            (row.weight * l, g.map(|v| row.weight * v))
        });
        ll += rows_ll;
        for (acc, v) in g.iter_mut().zip(rows_g) {
            *acc += v;
        }
        (ll, g.to_vec())
    }
}

/// One customer of the Gamma-Gamma data, with the logarithms that do not depend on the
/// parameters.
#[derive(Debug, Clone, Copy)]
struct GgRow {
    x: f64,
    /// x m, ln m, ln x.
    xm: f64,
    ln_m: f64,
    ln_x: f64,
}

/// (repeat purchases, mean repeat amount) of the customers with both positive, for the
/// Gamma-Gamma likelihood.
pub struct GammaGammaData {
    xs: Vec<f64>,
    x_weights: Vec<f64>,
    rows: Vec<GgRow>,
}

impl GammaGammaData {
    pub fn new(customers: &[(f64, f64)]) -> Self {
        let keys: Vec<f64> = customers.iter().map(|(x, _)| *x).collect();
        let (xs, at) = distinct(&keys);
        let mut x_weights = vec![0.0; xs.len()];
        let rows = customers
            .iter()
            .zip(at)
            .map(|(&(x, m), x_at)| {
                x_weights[x_at as usize] += 1.0;
                GgRow {
                    x,
                    xm: x * m,
                    ln_m: m.ln(),
                    ln_x: x.ln(),
                }
            })
            .collect();
        GammaGammaData {
            xs,
            x_weights,
            rows,
        }
    }
}

impl Likelihood for GammaGammaData {
    fn params(&self) -> usize {
        3
    }

    fn customers(&self) -> usize {
        self.rows.len()
    }

    fn total(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let gamma_gamma::Params { p, q, gamma: v } = gamma_gamma::Params::from_slice(theta);
        let (ln_v, lg_q, dg_q) = (v.ln(), ln_gamma(q), digamma(q));
        // Per distinct x: ln Gamma(p x + q) - ln Gamma(p x) - ln Gamma(q) + q ln v, and the
        // digammas of its derivatives.
        let mut ll = 0.0;
        let mut g = [0.0; 3];
        for (&x, &w) in self.xs.iter().zip(&self.x_weights) {
            let px = p * x;
            let (dg_pxq, dg_px) = (digamma(px + q), digamma(px));
            ll += w * (ln_gamma(px + q) - ln_gamma(px) - lg_q + q * ln_v);
            g[0] += w * x * (dg_pxq - dg_px);
            g[1] += w * (dg_pxq - dg_q + ln_v);
            g[2] += w * q / v;
        }
        let (rows_ll, rows_g) = par_sum(&self.rows, |row| {
            let px = p * row.x;
            let (s, ln_s) = (row.xm + v, (row.xm + v).ln());
            (
                (px - 1.0) * row.ln_m + px * row.ln_x - (px + q) * ln_s,
                [row.x * (row.ln_m + row.ln_x - ln_s), -ln_s, -(px + q) / s],
            )
        });
        ll += rows_ll;
        for (acc, v) in g.iter_mut().zip(rows_g) {
            *acc += v;
        }
        (ll, g.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histories() -> Vec<History> {
        // Repeats, ties and customers without repeat purchases, deterministic.
        (0..3000)
            .map(|i| {
                let x = f64::from((i * 7) % 23) * f64::from(i % 3 != 0);
                let t = f64::from(100 + (i * 13) % 400);
                let t_x = if x > 0.0 {
                    (t - f64::from((i * 5) % 90)).max(1.0)
                } else {
                    0.0
                };
                History { x, t_x, t }
            })
            .collect()
    }

    fn close(got: f64, want: f64) -> bool {
        (got - want).abs() <= 1e-12 * want.abs().max(1.0)
    }

    #[test]
    fn grouped_bgnbd_equals_the_sum_over_customers() {
        let h = histories();
        let data = BgNbdData::new(&h);
        assert!(data.rows.len() < h.len(), "ties are grouped");
        for theta in [
            [0.24, 30.9, 0.79, 2.43],
            [1.3, 72.0, 0.4, 11.0],
            [2.0, 5.0, 3.0, 0.5],
        ] {
            let (ll, g) = data.total(&theta);
            let p = bgnbd::Params::from_slice(&theta);
            let (mut want, mut want_g) = (0.0, [0.0; 4]);
            for one in &h {
                let (l, gi) = bgnbd::log_likelihood(&p, one);
                want += l;
                for k in 0..4 {
                    want_g[k] += gi[k];
                }
            }
            assert!(close(ll, want), "{theta:?}: {ll} vs {want}");
            for k in 0..4 {
                assert!(
                    close(g[k], want_g[k]),
                    "{theta:?} d{k}: {} vs {}",
                    g[k],
                    want_g[k]
                );
            }
        }
    }

    #[test]
    fn gamma_gamma_equals_the_sum_over_customers() {
        let customers: Vec<(f64, f64)> = (1..2000)
            .map(|i| (f64::from(1 + i % 17), 5.0 + f64::from((i * 31) % 400) / 7.0))
            .collect();
        let data = GammaGammaData::new(&customers);
        for theta in [[6.25, 3.74, 15.44], [1.2, 1.8, 90.0]] {
            let (ll, g) = data.total(&theta);
            let p = gamma_gamma::Params::from_slice(&theta);
            let (mut want, mut want_g) = (0.0, [0.0; 3]);
            for (x, m) in &customers {
                let (l, gi) = gamma_gamma::log_likelihood(&p, *x, *m);
                want += l;
                for k in 0..3 {
                    want_g[k] += gi[k];
                }
            }
            assert!(close(ll, want), "{theta:?}: {ll} vs {want}");
            for k in 0..3 {
                assert!(
                    close(g[k], want_g[k]),
                    "{theta:?} d{k}: {} vs {}",
                    g[k],
                    want_g[k]
                );
            }
        }
    }
}
