//! The special functions the BG/NBD and Gamma-Gamma models need: ln Gamma (libm's), digamma
//! for the analytic gradients, and the Gauss hypergeometric 2F1 for expected purchases.

/// ln Gamma(x) for x > 0.
pub fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// The digamma function psi(x) = d/dx ln Gamma(x), for x > 0: the recurrence psi(x) =
/// psi(x + 1) - 1/x up to x >= 10, then the asymptotic series (its first omitted term is
/// below 1e-15 there).
pub fn digamma(mut x: f64) -> f64 {
    let mut acc = 0.0;
    while x < 10.0 {
        acc -= 1.0 / x;
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    // ln x - 1/(2x) - sum B_2k / (2k x^2k)
    let series = inv2
        * (1.0 / 12.0
            - inv2
                * (1.0 / 120.0
                    - inv2
                        * (1.0 / 252.0
                            - inv2
                                * (1.0 / 240.0 - inv2 * (1.0 / 132.0 - inv2 * 691.0 / 32760.0)))));
    acc + x.ln() - 0.5 * inv - series
}

/// ln 2F1(a, b; c; z) for 0 <= z < 1 and c > 0, where the value is positive (as in the BG/NBD
/// expectation, where a, b, c > 0).
///
/// With a, b > 0 every term of the series is positive: it is summed in log space, so a term
/// that would overflow (a customer with thousands of repeat purchases has a and b in the
/// thousands, and the terms rise to astronomic sizes before they fall) does not. Otherwise
/// Euler's transform, 2F1(a, b; c; z) = (1 - z)^(c - a - b) 2F1(c - a, c - b; c; z), gives
/// the series whose parameters are positive where that one's are not; lifetimes falls back to
/// the same transform where its direct value overflows. `None` when neither form has positive
/// parameters or the series does not converge within its term budget.
pub fn ln_hyp2f1(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    if !(0.0..1.0).contains(&z) || c <= 0.0 {
        return None;
    }
    if z == 0.0 {
        return Some(0.0);
    }
    if a > 0.0 && b > 0.0 {
        return ln_positive_series(a, b, c, z);
    }
    let (ea, eb) = (c - a, c - b);
    if ea > 0.0 && eb > 0.0 {
        return Some(ln_positive_series(ea, eb, c, z)? + (c - a - b) * (-z).ln_1p());
    }
    // One parameter non-positive in both forms: a plain series with signs. Used only where
    // the terms stay small (a non-positive integer parameter ends the series).
    signed_series(a, b, c, z).filter(|v| *v > 0.0).map(f64::ln)
}

/// ln of sum over n of (a)_n (b)_n / ((c)_n n!) z^n, all terms positive.
fn ln_positive_series(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    let ln_z = z.ln();
    // Running sum in the scale of the largest term so far: sum = exp(scale) * acc.
    let (mut scale, mut acc, mut ln_term) = (0.0f64, 1.0f64, 0.0f64);
    for n in 0..2_000_000u32 {
        let n = f64::from(n);
        ln_term += ((a + n) * (b + n) / ((c + n) * (n + 1.0))).ln() + ln_z;
        if ln_term > scale {
            acc = acc * (scale - ln_term).exp() + 1.0;
            scale = ln_term;
        } else {
            let rel = (ln_term - scale).exp();
            acc += rel;
            // Past the peak (the ratio of terms is below 1 from here on) and negligible.
            if rel < 1e-17 * acc && (a + n) * (b + n) * z < (c + n) * (n + 1.0) {
                return Some(scale + acc.ln());
            }
        }
    }
    None
}

fn signed_series(a: f64, b: f64, c: f64, z: f64) -> Option<f64> {
    let (mut sum, mut term) = (1.0f64, 1.0f64);
    for n in 0..100_000u32 {
        let n = f64::from(n);
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        if term == 0.0 || term.abs() < 1e-17 * sum.abs() {
            return sum.is_finite().then_some(sum);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, rel: f64) {
        assert!(
            (got - want).abs() <= rel * want.abs().max(1e-300),
            "got {got}, want {want}"
        );
    }

    #[test]
    fn digamma_matches_known_values() {
        // psi(1) = -gamma, psi(1/2) = -gamma - 2 ln 2, psi'(1) = pi^2/6, psi'(1/2) = pi^2/2.
        let euler = 0.577_215_664_901_532_9;
        close(digamma(1.0), -euler, 1e-14);
        close(digamma(0.5), -euler - 2.0 * 2f64.ln(), 1e-14);
        close(digamma(100.0), 4.600_161_852_738_087, 1e-14);
        // Against ln Gamma's finite differences.
        for x in [0.3, 2.7, 11.0, 250.0] {
            let h = 1e-5 * x;
            let fd = (ln_gamma(x + h) - ln_gamma(x - h)) / (2.0 * h);
            close(digamma(x), fd, 1e-8);
        }
    }

    #[test]
    fn hyp2f1_matches_closed_forms() {
        // 2F1(1, 1; 2; z) = -ln(1 - z) / z
        for z in [0.1, 0.5, 0.9, 0.999] {
            close(
                ln_hyp2f1(1.0, 1.0, 2.0, z).unwrap(),
                (-(-z).ln_1p() / z).ln(),
                1e-13,
            );
        }
        // 2F1(a, b; b; z) = (1 - z)^-a
        close(
            ln_hyp2f1(2.5, 3.0, 3.0, 0.7).unwrap(),
            -2.5 * 0.3f64.ln(),
            1e-13,
        );
        // Gauss's theorem near z -> 1 (c > a + b): 2F1(0.5, 0.25; 2; 1) =
        // Gamma(2) Gamma(1.25) / (Gamma(1.5) Gamma(1.75)).
        let at_one = ln_gamma(2.0) + ln_gamma(1.25) - ln_gamma(1.5) - ln_gamma(1.75);
        // At z = 1 - 1e-4 the value is within about (1 - z)^(c - a - b) = 1e-5 of it.
        let near = ln_hyp2f1(0.5, 0.25, 2.0, 0.9999).unwrap();
        assert!(near < at_one && at_one - near < 1e-4, "{near} {at_one}");
    }

    #[test]
    fn hyp2f1_euler_branch_and_huge_parameters() {
        // a < 0 < c - a: Euler's form. 2F1(-0.5, 1; 1; z) = (1 - z)^0.5.
        close(
            ln_hyp2f1(-0.5, 1.0, 1.0, 0.8).unwrap(),
            0.5 * 0.2f64.ln(),
            1e-12,
        );
        // A non-positive integer ends the series: 2F1(-2, b; c; z) = 1 - 2bz/c + b(b+1)z^2/(c(c+1)).
        let (b, c, z) = (-1.5, 0.5, 0.3);
        let want = 1.0 - 2.0 * b * z / c + b * (b + 1.0) * z * z / (c * (c + 1.0));
        close(ln_hyp2f1(-2.0, b, c, z).unwrap(), want.ln(), 1e-12);
        // Thousands of repeat purchases: finite, and equal to the Euler form's value.
        let (a, b, c, z) = (3000.2, 3002.4, 6002.2, 0.92);
        let direct = ln_hyp2f1(a, b, c, z).unwrap();
        let euler = ln_positive_series(c - a, c - b, c, z).unwrap() + (c - a - b) * (-z).ln_1p();
        assert!(direct.is_finite() && direct > 700.0, "{direct}");
        close(direct, euler, 1e-10);
    }
}
