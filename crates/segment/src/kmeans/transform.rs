//! Feature transforms: written in YAML as `log1p`, `zscore`, `clip(MIN, MAX)` and
//! `winsorize(LOWER, UPPER)`, applied in order, fitted on the rows being clustered.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// One transform as written in YAML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub enum Transform {
    /// ln(1 + x); x must be above -1.
    Log1p,
    /// (x - mean) / standard deviation (population, as scikit-learn's `StandardScaler`); a
    /// constant feature is only centred.
    Zscore,
    /// Values below `min` become `min`, above `max` become `max`.
    Clip {
        /// Lowest value kept.
        min: f64,
        /// Highest value kept.
        max: f64,
    },
    /// Clip at the `lower` and `upper` quantiles (linear interpolation, as numpy and
    /// `percentile_cont`), e.g. `winsorize(0.01, 0.99)`.
    Winsorize {
        /// Quantile below which values are raised to it.
        lower: f64,
        /// Quantile above which values are lowered to it.
        upper: f64,
    },
}

impl TryFrom<String> for Transform {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl FromStr for Transform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (name, args) = match s.split_once('(') {
            Some((name, rest)) => {
                let Some(args) = rest.trim_end().strip_suffix(')') else {
                    return Err(format!("transform `{s}` has no closing `)`"));
                };
                let args = args
                    .split(',')
                    .map(|a| {
                        a.trim()
                            .parse::<f64>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| format!("`{}` in `{s}` is not a number", a.trim()))
                    })
                    .collect::<Result<Vec<f64>, String>>()?;
                (name.trim(), args)
            }
            None => (s, Vec::new()),
        };
        let usage = "transforms are `log1p`, `zscore`, `clip(MIN, MAX)`, `winsorize(LOWER, UPPER)`";
        match (name, args.as_slice()) {
            ("log1p", []) => Ok(Transform::Log1p),
            ("zscore", []) => Ok(Transform::Zscore),
            ("clip", &[min, max]) if min <= max => Ok(Transform::Clip { min, max }),
            ("clip", &[_, _]) => Err(format!("`{s}`: MIN must not be above MAX")),
            ("winsorize", &[lower, upper]) if 0.0 <= lower && lower < upper && upper <= 1.0 => {
                Ok(Transform::Winsorize { lower, upper })
            }
            ("winsorize", &[_, _]) => Err(format!(
                "`{s}`: quantiles must satisfy 0 <= LOWER < UPPER <= 1"
            )),
            _ => Err(format!("unknown transform `{s}`; {usage}")),
        }
    }
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transform::Log1p => f.write_str("log1p"),
            Transform::Zscore => f.write_str("zscore"),
            Transform::Clip { min, max } => write!(f, "clip({min}, {max})"),
            Transform::Winsorize { lower, upper } => write!(f, "winsorize({lower}, {upper})"),
        }
    }
}

/// A transform with what it learned from the data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fitted {
    Log1p,
    Clip { min: f64, max: f64 },
    Zscore { mean: f64, std: f64 },
}

/// Applies `transforms` in order to `values` (in place) and returns the fitted steps. Fitting
/// reads the values in their given order, which the caller fixes (rows sorted by key), so the
/// fitted means are the same on every run.
pub(crate) fn fit_transform(
    values: &mut [f64],
    transforms: &[Transform],
) -> Result<Vec<Fitted>, String> {
    let mut fitted = Vec::with_capacity(transforms.len());
    for t in transforms {
        let step = match *t {
            Transform::Log1p => {
                let bad = values.iter().filter(|&&v| v <= -1.0).count();
                if bad > 0 {
                    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                    return Err(format!(
                        "log1p needs values above -1, but {bad} rows are not (the lowest is \
                         {min}); clip first, e.g. `clip(0, 1e12)`, or use `greatest(x, 0)` in \
                         `expr`"
                    ));
                }
                Fitted::Log1p
            }
            Transform::Clip { min, max } => Fitted::Clip { min, max },
            Transform::Winsorize { lower, upper } => {
                let mut sorted = values.to_vec();
                sorted.sort_by(f64::total_cmp);
                Fitted::Clip {
                    min: quantile(&sorted, lower),
                    max: quantile(&sorted, upper),
                }
            }
            Transform::Zscore => {
                let n = values.len().max(1) as f64;
                let mean = values.iter().sum::<f64>() / n;
                let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let std = if var > 0.0 { var.sqrt() } else { 1.0 };
                Fitted::Zscore { mean, std }
            }
        };
        for v in values.iter_mut() {
            *v = step.apply(*v);
        }
        fitted.push(step);
    }
    Ok(fitted)
}

impl Fitted {
    /// The step as bits, for equality and hashing of the functions that carry it.
    pub fn bits(&self) -> [u64; 3] {
        match *self {
            Fitted::Log1p => [0, 0, 0],
            Fitted::Clip { min, max } => [1, min.to_bits(), max.to_bits()],
            Fitted::Zscore { mean, std } => [2, mean.to_bits(), std.to_bits()],
        }
    }

    /// The step [`Fitted::bits`] gave; `None` for bits no step gives.
    pub fn from_bits(bits: [u64; 3]) -> Option<Fitted> {
        let [tag, a, b] = bits;
        let (a, b) = (f64::from_bits(a), f64::from_bits(b));
        match tag {
            0 => Some(Fitted::Log1p),
            1 => Some(Fitted::Clip { min: a, max: b }),
            2 => Some(Fitted::Zscore { mean: a, std: b }),
            _ => None,
        }
    }

    pub fn apply(&self, v: f64) -> f64 {
        match *self {
            Fitted::Log1p => v.ln_1p(),
            Fitted::Clip { min, max } => v.clamp(min, max),
            Fitted::Zscore { mean, std } => (v - mean) / std,
        }
    }

    /// Back towards original units. Clipping has no inverse: a center stays in the clipped
    /// range, which is the range the clusters were fitted on.
    pub fn invert(&self, v: f64) -> f64 {
        match *self {
            Fitted::Log1p => v.exp_m1(),
            Fitted::Clip { .. } => v,
            Fitted::Zscore { mean, std } => v * std + mean,
        }
    }
}

/// Undoes the fitted steps, last first.
pub(crate) fn invert_all(steps: &[Fitted], v: f64) -> f64 {
    steps.iter().rev().fold(v, |v, s| s.invert(v))
}

/// The `q` quantile of sorted values, interpolating linearly between neighbours.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => {
            let pos = q * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_yaml_forms_and_explains_mistakes() {
        assert_eq!("log1p".parse(), Ok(Transform::Log1p));
        assert_eq!(
            " winsorize(0.01, 0.99) ".parse(),
            Ok(Transform::Winsorize {
                lower: 0.01,
                upper: 0.99
            })
        );
        assert_eq!(
            "clip(0,100)".parse(),
            Ok(Transform::Clip {
                min: 0.0,
                max: 100.0
            })
        );
        let err = "log2".parse::<Transform>().unwrap_err();
        assert!(err.contains("unknown transform `log2`"), "{err}");
        let err = "winsorize(0.9, 0.1)".parse::<Transform>().unwrap_err();
        assert!(err.contains("LOWER < UPPER"), "{err}");
        let err = "clip(0, x)".parse::<Transform>().unwrap_err();
        assert!(err.contains("`x`"), "{err}");
    }

    #[test]
    fn fits_in_order_and_inverts() {
        let mut v = vec![0.0, 1.0, 3.0, 7.0, 1000.0];
        let steps = fit_transform(
            &mut v,
            &[
                Transform::Winsorize {
                    lower: 0.0,
                    upper: 0.75,
                },
                Transform::Log1p,
                Transform::Zscore,
            ],
        )
        .unwrap();
        // 0.75 quantile of 5 values is the 4th: 7, so 1000 is clipped to 7.
        assert_eq!(steps[0], Fitted::Clip { min: 0.0, max: 7.0 });
        let mean = v.iter().sum::<f64>() / 5.0;
        let var = v.iter().map(|x| x * x).sum::<f64>() / 5.0;
        assert!(mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-12);
        assert!((invert_all(&steps, v[2]) - 3.0).abs() < 1e-12);
        assert!((invert_all(&steps, v[4]) - 7.0).abs() < 1e-12);
    }

    #[test]
    fn log1p_of_minus_one_is_an_error_not_a_nan() {
        let err = fit_transform(&mut [0.0, -1.0, -3.0], &[Transform::Log1p]).unwrap_err();
        assert!(err.contains("2 rows") && err.contains("-3"), "{err}");
    }
}
