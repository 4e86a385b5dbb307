//! Every customer's predictions at the fitted parameters: p_alive, expected purchases over the
//! horizon, expected order value and discounted value.
//!
//! The expensive part, the Gauss hypergeometric 2F1 of the expected purchases, once per month
//! of the horizon, depends on the customer's repeat purchases x and observed days T only, not
//! on t_x: E[N(t)] = P(alive) E[N(t) | alive], and only P(alive) involves t_x. Millions of
//! customers share a few hundred thousand (x, T) pairs, so the monthly curve of E[N(t) | alive]
//! is computed once per pair and each customer scales it by their P(alive).

use rayon::prelude::*;

use super::bgnbd::{self, History};
use super::gamma_gamma;

/// A customer's p_alive, expected purchases over the horizon, expected order value and
/// predicted value: lifetimes' `customer_lifetime_value` with `freq='D'`, each month 30 days,
/// its expected purchases valued at the expected order value and discounted at the monthly
/// rate. `None` where 2F1 cannot be evaluated. The one-customer reference of [`predict_all`].
#[cfg(test)]
pub fn predict(
    bg: &bgnbd::Params,
    gg: &gamma_gamma::Params,
    h: &History,
    mean_amount: f64,
    months: usize,
    discount: f64,
) -> Option<[f64; 4]> {
    let alive = bgnbd::p_alive(bg, h);
    let value = order_value(gg, h, mean_amount);
    let (mut clv, mut previous) = (0.0, 0.0);
    for i in 1..=months {
        let cumulative = bgnbd::expected_purchases(bg, h, 30.0 * i as f64)?;
        clv += (cumulative - previous) * value / (1.0 + discount).powi(i as i32);
        previous = cumulative;
    }
    Some([alive, previous, value, clv])
}

fn order_value(gg: &gamma_gamma::Params, h: &History, mean_amount: f64) -> f64 {
    let m = if h.x > 0.0 { mean_amount } else { 0.0 };
    gamma_gamma::expected_order_value(gg, h.x, m)
}

/// [`predict`] for every customer (`means[i]` is customer i's mean repeat amount), on all
/// cores. `Err(i)` names a customer whose expected purchases cannot be evaluated.
pub fn predict_all(
    bg: &bgnbd::Params,
    gg: &gamma_gamma::Params,
    histories: &[History],
    means: &[f64],
    months: usize,
    discount: f64,
) -> Result<Vec<[f64; 4]>, usize> {
    // The distinct (x, T) pairs, and each customer's.
    let mut pairs: Vec<(f64, f64)> = histories.iter().map(|h| (h.x, h.t)).collect();
    let order = |a: &(f64, f64), b: &(f64, f64)| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1));
    pairs.par_sort_unstable_by(order);
    pairs.dedup_by(|a, b| order(a, b).is_eq());
    // Per pair: E[N(30 months) | alive] and the discounted sum of its monthly increments.
    let curves: Vec<Option<(f64, f64)>> = pairs
        .par_iter()
        .map(|&(x, t)| {
            let (mut previous, mut discounted) = (0.0, 0.0);
            for i in 1..=months {
                let cumulative = bgnbd::purchases_if_alive(bg, x, t, 30.0 * i as f64)?;
                discounted += (cumulative - previous) / (1.0 + discount).powi(i as i32);
                previous = cumulative;
            }
            Some((previous, discounted))
        })
        .collect();
    histories
        .par_iter()
        .zip(means.par_iter())
        .enumerate()
        .map(|(i, (h, m))| {
            let at = pairs
                .binary_search_by(|p| order(p, &(h.x, h.t)))
                .expect("every customer's pair is among the pairs");
            let (purchases, discounted) = curves[at].ok_or(i)?;
            let alive = bgnbd::p_alive(bg, h);
            let value = order_value(gg, h, *m);
            Ok([alive, alive * purchases, value, value * alive * discounted])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_customers_at_once_equal_one_at_a_time() {
        let bg = bgnbd::Params {
            r: 0.2426,
            alpha: 30.9,
            a: 0.7929,
            b: 2.4259,
        };
        let gg = gamma_gamma::Params {
            p: 6.25,
            q: 3.74,
            gamma: 15.44,
        };
        // Shared (x, T) pairs with different t_x, customers without repeats, refunds.
        let histories: Vec<History> = (0..500)
            .map(|i| {
                let x = f64::from(i % 7);
                let t = f64::from(200 + (i % 5) * 30);
                let t_x = if x > 0.0 { f64::from(i % 150) } else { 0.0 };
                History { x, t_x, t }
            })
            .collect();
        let means: Vec<f64> = (0..500)
            .map(|i| {
                if i % 7 == 0 {
                    f64::NAN
                } else {
                    f64::from(i % 40) - 5.0
                }
            })
            .collect();
        let all = predict_all(&bg, &gg, &histories, &means, 12, 0.01).unwrap();
        for (i, (h, m)) in histories.iter().zip(&means).enumerate() {
            let one = predict(&bg, &gg, h, *m, 12, 0.01).unwrap();
            for k in 0..4 {
                assert!(
                    (all[i][k] - one[k]).abs() <= 1e-12 * one[k].abs().max(1e-9),
                    "customer {i} ({h:?}) column {k}: {} vs {}",
                    all[i][k],
                    one[k]
                );
            }
        }
    }
}
