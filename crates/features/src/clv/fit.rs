//! Maximum likelihood for the CLV models: L-BFGS (argmin) over the logs of the parameters,
//! which keeps them positive, with the models' analytic gradients; standard errors from the
//! Hessian of the log-likelihood at the optimum.

use argmin::core::{CostFunction, Executor, Gradient, State, TerminationReason};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rayon::prelude::*;

/// A model's log-likelihood over its data: the sum over customers, and its gradient with
/// respect to the parameters (not their logs).
pub trait Likelihood: Sync {
    fn params(&self) -> usize;
    fn customers(&self) -> usize;
    fn total(&self, theta: &[f64]) -> (f64, Vec<f64>);
}

/// Sums `f` over `items` on all cores: the log-likelihood and its N gradient components.
/// Chunks are summed in parallel and their sums added in chunk order, so the result is the
/// same bits whatever the threads (reruns and a cluster's run publish identical predictions).
pub fn par_sum<T: Sync, const N: usize>(
    items: &[T],
    f: impl Fn(&T) -> (f64, [f64; N]) + Sync,
) -> (f64, [f64; N]) {
    let partials: Vec<(f64, [f64; N])> = items
        .par_chunks(4096)
        .map(|chunk| {
            let (mut ll, mut g) = (0.0, [0.0; N]);
            for item in chunk {
                let (l, gi) = f(item);
                ll += l;
                for (acc, v) in g.iter_mut().zip(gi) {
                    *acc += v;
                }
            }
            (ll, g)
        })
        .collect();
    partials
        .into_iter()
        .fold((0.0, [0.0; N]), |(la, mut ga), (lb, gb)| {
            for (a, b) in ga.iter_mut().zip(gb) {
                *a += b;
            }
            (la + lb, ga)
        })
}

/// A fit's outcome.
#[derive(Debug, Clone)]
pub struct Fit {
    pub params: Vec<f64>,
    /// Standard errors of `params`; NaN where the Hessian is not invertible.
    pub std_errors: Vec<f64>,
    /// The log-likelihood at `params` (the sum over customers, penalty excluded).
    pub log_likelihood: f64,
    pub iterations: u64,
    pub converged: bool,
    /// Why the optimizer stopped, in its words.
    pub reason: String,
}

/// The objective argmin minimizes: the mean negative log-likelihood plus an L2 penalty on the
/// parameters (lifetimes' `penalizer_coef`), over the parameters' logs.
struct Objective<'a, L: Likelihood> {
    model: &'a L,
    penalizer: f64,
    /// The last point evaluated and its cost and gradient: the line search asks for the cost
    /// and then the gradient of the same point, and one pass over the data gives both.
    last: std::sync::Mutex<Option<Evaluated>>,
}

/// A point (log-parameters) with its cost and gradient.
type Evaluated = (Vec<f64>, f64, Vec<f64>);

impl<'a, L: Likelihood> Objective<'a, L> {
    fn new(model: &'a L, penalizer: f64) -> Self {
        Objective {
            model,
            penalizer,
            last: std::sync::Mutex::new(None),
        }
    }

    fn eval(&self, log_theta: &[f64]) -> (f64, Vec<f64>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, cost, grad)) = last.as_ref()
            && at.as_slice() == log_theta
        {
            return (*cost, grad.clone());
        }
        let (cost, grad) = self.compute(log_theta);
        *last = Some((log_theta.to_vec(), cost, grad.clone()));
        (cost, grad)
    }

    fn compute(&self, log_theta: &[f64]) -> (f64, Vec<f64>) {
        let theta: Vec<f64> = log_theta.iter().map(|v| v.exp()).collect();
        let n = self.model.customers().max(1) as f64;
        let (ll, g) = self.model.total(&theta);
        let cost = -ll / n + self.penalizer * theta.iter().map(|t| t * t).sum::<f64>();
        let grad = theta
            .iter()
            .zip(&g)
            .map(|(t, gk)| t * (-gk / n + 2.0 * self.penalizer * t))
            .collect();
        (cost, grad)
    }
}

impl<L: Likelihood> CostFunction for Objective<'_, L> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        let cost = self.eval(p).0;
        // A step too far (exp overflows): infinitely bad, for the line search to step back.
        Ok(if cost.is_finite() { cost } else { f64::MAX })
    }
}

impl<L: Likelihood> Gradient for Objective<'_, L> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(p).1)
    }
}

/// Fits `model` from all parameters 1 (lifetimes' start), with L2 `penalizer` (0: none).
///
/// L-BFGS's curvature memory can point uphill near the optimum, where rounding dominates the
/// differences it is built from; the line search then stops with a gradient not yet flat (seen
/// on a few hundred customers). Such a run is restarted from its best point with the memory
/// cleared (a steepest-descent first step), up to [`RESTARTS`] times, within `max_iters` in all.
pub fn fit<L: Likelihood>(model: &L, penalizer: f64, max_iters: u64) -> Result<Fit, String> {
    let objective = Objective::new(model, penalizer);
    let mut log_theta = vec![0.0; model.params()];
    let mut cost = objective.eval(&log_theta).0;
    let mut iterations = 0;
    let mut restarts = 0;
    let (grad_norm, reason, converged) = loop {
        let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
            .with_tolerance_grad(1e-10)
            .and_then(|s| s.with_tolerance_cost(1e-14))
            .map_err(|e| e.to_string())?;
        let result = Executor::new(Objective::new(model, penalizer), solver)
            .configure(|state| {
                state
                    .param(log_theta.clone())
                    .max_iters(max_iters - iterations)
            })
            .run()
            .map_err(|e| format!("the optimizer failed: {e}"))?;
        let state = result.state();
        iterations += state.get_iter();
        let best = state
            .get_best_param()
            .cloned()
            .ok_or("the optimizer returned no parameters")?;
        let (best_cost, grad) = objective.eval(&best);
        let improved = best_cost < cost;
        if improved {
            (log_theta, cost) = (best, best_cost);
        }
        let grad_norm = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        let reason = state.get_termination_reason().cloned();
        let out_of_iterations = matches!(reason, Some(TerminationReason::MaxItersReached) | None)
            || iterations >= max_iters;
        // Converged: the optimizer stopped on its own and the gradient is flat; running out of
        // iterations, or a line search that cannot improve on a point with a steep gradient,
        // is not.
        let converged = grad_norm < 1e-5 && !out_of_iterations;
        if converged || out_of_iterations || !improved || restarts == RESTARTS {
            break (grad_norm, reason, converged);
        }
        restarts += 1;
    };
    let theta: Vec<f64> = log_theta.iter().map(|v| v.exp()).collect();
    let (ll, _) = model.total(&theta);
    let restarted = match restarts {
        0 => String::new(),
        n => format!(" after {n} restart{}", if n == 1 { "" } else { "s" }),
    };
    Ok(Fit {
        std_errors: std_errors(model, &theta),
        params: theta,
        log_likelihood: ll,
        iterations,
        converged,
        reason: format!(
            "{}{restarted}; largest gradient component {grad_norm:.2e}",
            reason.map_or("no reason".to_string(), |r| r.text().to_string())
        ),
    })
}

/// Restarts of L-BFGS, with its memory cleared, after a line search gave up (see [`fit`]).
const RESTARTS: u32 = 5;

/// Standard errors from the observed information: the Hessian of the negative log-likelihood
/// (its sum over customers) in the parameters, by central differences of the analytic
/// gradient, inverted.
fn std_errors<L: Likelihood>(model: &L, theta: &[f64]) -> Vec<f64> {
    let n = theta.len();
    let mut h = vec![vec![0.0; n]; n];
    for j in 0..n {
        let step = 1e-5 * theta[j].abs().max(1e-8);
        let (mut up, mut down) = (theta.to_vec(), theta.to_vec());
        up[j] += step;
        down[j] -= step;
        let (_, gu) = model.total(&up);
        let (_, gd) = model.total(&down);
        for i in 0..n {
            h[i][j] = -(gu[i] - gd[i]) / (2.0 * step);
        }
    }
    // Symmetric by construction up to rounding.
    let h: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| 0.5 * (h[i][j] + h[j][i])).collect())
        .collect();
    match invert(h) {
        Some(inv) => (0..n)
            .map(|i| {
                if inv[i][i] > 0.0 {
                    inv[i][i].sqrt()
                } else {
                    f64::NAN
                }
            })
            .collect(),
        None => vec![f64::NAN; n],
    }
}

/// Gauss-Jordan with partial pivoting on a small matrix; `None` when singular.
fn invert(mut a: Vec<Vec<f64>>) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut inv: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 {
            return None;
        }
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let p = a[col][col];
        for j in 0..n {
            a[col][j] /= p;
            inv[col][j] /= p;
        }
        for row in 0..n {
            if row != col {
                let f = a[row][col];
                for j in 0..n {
                    a[row][j] -= f * a[col][j];
                    inv[row][j] -= f * inv[col][j];
                }
            }
        }
    }
    Some(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Normal samples with known mean and sd: the MLE is the sample mean and the (biased)
    /// sample sd, and the standard error of the mean is sd / sqrt(n).
    struct Normal(Vec<f64>);
    impl Likelihood for Normal {
        fn params(&self) -> usize {
            2
        }
        fn customers(&self) -> usize {
            self.0.len()
        }
        fn total(&self, t: &[f64]) -> (f64, Vec<f64>) {
            let (mu, s) = (t[0], t[1]);
            let (ll, g) = par_sum(&self.0, |x| {
                let z = (x - mu) / s;
                (-s.ln() - 0.5 * z * z, [z / s, (z * z - 1.0) / s])
            });
            (ll, g.to_vec())
        }
    }

    #[test]
    fn fits_a_known_maximum_with_its_standard_errors() {
        let data: Vec<f64> = (0..1000)
            .map(|i| 5.0 + ((i * 7919) % 1000) as f64 / 500.0)
            .collect();
        let n = data.len() as f64;
        let mean = data.iter().sum::<f64>() / n;
        let sd = (data.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
        let fit = fit(&Normal(data), 0.0, 500).unwrap();
        assert!(fit.converged, "{}", fit.reason);
        assert!(
            (fit.params[0] - mean).abs() < 1e-7 * mean,
            "{:?}",
            fit.params
        );
        assert!((fit.params[1] - sd).abs() < 1e-7 * sd, "{:?}", fit.params);
        assert!((fit.std_errors[0] - sd / n.sqrt()).abs() < 1e-4 * sd / n.sqrt());
    }

    #[test]
    fn too_few_iterations_is_not_convergence() {
        let data: Vec<f64> = (0..100).map(|i| 50.0 + f64::from(i)).collect();
        let fit = fit(&Normal(data), 0.0, 2).unwrap();
        assert!(!fit.converged, "{}", fit.reason);
    }
}
