//! The models fitted on the CDNOW sample (tests/data/cdnow): the data of Fader, Hardie and
//! Lee (2005), whose published parameters the fits must reproduce.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::bgnbd::{self, History};
use super::fit::fit;
use super::gamma_gamma;
use super::{BgNbdData, GammaGammaData};

/// Customer -> (day, amount) of every order up to `end`, summed per day.
fn cdnow_days(end: NaiveDate) -> BTreeMap<String, BTreeMap<NaiveDate, f64>> {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/cdnow/CDNOW_sample.txt");
    let text = std::fs::read_to_string(file).unwrap();
    let mut days: BTreeMap<String, BTreeMap<NaiveDate, f64>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let day = NaiveDate::parse_from_str(f[2], "%Y%m%d").unwrap();
        if day <= end {
            *days
                .entry(f[0].to_string())
                .or_default()
                .entry(day)
                .or_default() += f[4].parse::<f64>().unwrap();
        }
    }
    days
}

/// lifetimes' summary with `freq='D'`: x, t_x, T and the mean repeat amount.
fn summary(end: NaiveDate) -> Vec<(History, f64)> {
    cdnow_days(end)
        .values()
        .map(|d| {
            let first = *d.keys().next().unwrap();
            let last = *d.keys().next_back().unwrap();
            let x = (d.len() - 1) as f64;
            let repeat: Vec<f64> = d.values().skip(1).copied().collect();
            let m = if repeat.is_empty() {
                0.0
            } else {
                repeat.iter().sum::<f64>() / repeat.len() as f64
            };
            (
                History {
                    x,
                    t_x: (last - first).num_days() as f64,
                    t: (end - first).num_days() as f64,
                },
                m,
            )
        })
        .collect()
}

/// `got` equals the published `want` within `rel`, or within the rounding of its published
/// digits (`half_unit`: half a unit in its last place) where that is looser.
fn within(got: f64, want: f64, rel: f64, what: &str) {
    within_digits(got, want, rel, 0.0, what);
}

fn within_digits(got: f64, want: f64, rel: f64, half_unit: f64, what: &str) {
    assert!(
        (got - want).abs() <= (rel * want.abs()).max(half_unit),
        "{what}: {got} against {want}"
    );
}

#[test]
fn cdnow_fits_reproduce_fader_hardie_lee() {
    // as_of 1997-10-01: observed through 1997-09-30.
    let end = NaiveDate::from_ymd_opt(1997, 9, 30).unwrap();
    let rows = summary(end);
    assert_eq!(rows.len(), 2357);
    let histories: Vec<History> = rows.iter().map(|(h, _)| *h).collect();
    let data = BgNbdData::new(&histories);
    let bg = fit(&data, 0.0, 1000).unwrap();
    assert!(bg.converged, "{}", bg.reason);
    let p = bgnbd::Params::from_slice(&bg.params);
    within(p.r, 0.2426, 1e-3, "r");
    within(p.alpha / 7.0, 4.4136, 1e-3, "alpha / 7");
    within(p.a, 0.7929, 1e-3, "a");
    within(p.b, 2.4259, 1e-3, "b");
    // In weeks the log-likelihood is the days' plus x ln 7 per customer.
    let ln7_x: f64 = rows.iter().map(|(h, _)| h.x * 7f64.ln()).sum();
    within(bg.log_likelihood + ln7_x, -9582.4, 1e-4, "LL in weeks");
    assert!(bg.std_errors.iter().all(|s| s.is_finite() && *s > 0.0));

    let repeaters: Vec<(f64, f64)> = rows
        .iter()
        .filter(|(h, m)| h.x > 0.0 && *m > 0.0)
        .map(|(h, m)| (h.x, *m))
        .collect();
    assert_eq!(repeaters.len(), 946);
    let gg = fit(&GammaGammaData::new(&repeaters), 0.0, 1000).unwrap();
    assert!(gg.converged, "{}", gg.reason);
    let g = gamma_gamma::Params::from_slice(&gg.params);
    // Published to two decimals (lifetimes' documentation).
    within_digits(g.p, 6.25, 1e-3, 0.005, "p");
    within_digits(g.q, 3.74, 1e-3, 0.005, "q");
    within_digits(g.gamma, 15.44, 1e-3, 0.005, "gamma");
}
