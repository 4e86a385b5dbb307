//! The k-means driver: k-means++ seeding and Lloyd iterations for `n_init` runs. The passes
//! over the data run either in memory, over one row-major buffer loaded once, with bounds that
//! skip the distances whose outcome is known ([`Passes::Memory`], the default; see
//! [`memory`](super::memory)), or as DataFusion aggregates of the kernel ([`Pass::update`])
//! over the partitioned feature table ([`Passes::Plan`], the form a distributed engine runs).
//! Both compute the same draws and the same exact sums, so both give the same fit.

use std::time::Instant;

use serde::Deserialize;

use segflow_core::datafusion::common::cast::as_binary_array;
use segflow_core::datafusion::error::DataFusionError;
use segflow_core::datafusion::logical_expr::{Expr, col};
use segflow_core::datafusion::prelude::SessionContext;

use super::kernel::{
    self, Pass, Scales, State, TILE_ROWS, Task, draw, nearest, row_in_tile, step_stride, target,
    tile_of, unfixed,
};
use super::memory::{Ended, Run, TooFewPoints, move_centers};
use super::udf::KMeansPass;

/// Why a fit failed.
#[derive(Debug)]
pub(super) enum FitError {
    DataFusion(DataFusionError),
    /// Something about the data, for the user.
    Data(String),
}

impl From<DataFusionError> for FitError {
    fn from(e: DataFusionError) -> Self {
        FitError::DataFusion(e)
    }
}

/// The best of `n_init` runs for one k, clusters numbered by size (largest first).
#[derive(Debug, Clone)]
pub(super) struct Fit {
    pub k: usize,
    /// `k * d`, row-major, in the transformed (clustered) space.
    pub centers: Vec<f64>,
    /// Sum of squared distances of each cluster's rows to its center.
    pub within: Vec<f64>,
    /// Each cluster's id: 0, 1, 2, ... by size, or as [`Fit::renumber`] gave them.
    pub ids: Vec<i32>,
    /// Sum of `within`: what scikit-learn calls inertia.
    pub inertia: f64,
    /// Lloyd iterations of the winning run.
    pub iterations: usize,
    /// Mean silhouette on the sample (NaN when not computed).
    pub silhouette: f64,
    /// Wall time of the fit (all runs, seeding included).
    pub seconds: f64,
    /// Passes over the data.
    pub passes: usize,
}

impl Fit {
    /// Gives the clusters `ids` (one per cluster, in the current order) and orders them by id.
    pub fn renumber(&mut self, ids: &[i32]) {
        let d = self.centers.len() / self.k.max(1);
        let mut order: Vec<usize> = (0..self.k).collect();
        order.sort_by_key(|&i| ids[i]);
        self.centers = order
            .iter()
            .flat_map(|&i| self.centers[i * d..(i + 1) * d].to_vec())
            .collect();
        self.within = order.iter().map(|&i| self.within[i]).collect();
        self.ids = order.iter().map(|&i| ids[i]).collect();
    }
}

/// Where the passes over the data run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Passes {
    /// `memory` where plans run in this process, `plan` where they run on a cluster: the
    /// rows stay where the passes are cheapest to run.
    #[default]
    Auto,
    /// The transformed rows are copied once into one row-major buffer and each run is fitted
    /// over it (its passes parallel loops over blocks of rows), measuring only the distances
    /// its bounds leave open. Skips DataFusion's per-pass batch handling, which cost more than
    /// the distances.
    Memory,
    /// Each pass is a `kmeans_pass` aggregate over the partitions of the run table of fitted
    /// rows: the same kernel and the same sums, in the form a distributed engine runs. On a
    /// cluster every pass is a job whose partial aggregates run on the executors, with the
    /// pass (its centers, its draws) shipped inside the function; only the k-means state
    /// comes back.
    Plan,
}

impl Passes {
    /// Where the passes run on an engine that is `distributed` or not.
    pub fn resolve(self, distributed: bool) -> Passes {
        match self {
            Passes::Auto if distributed => Passes::Plan,
            Passes::Auto => Passes::Memory,
            other => other,
        }
    }
}

/// Where a pass's state goes.
type PassReply = futures::channel::oneshot::Sender<Result<State, FitError>>;

/// The passes waiting to run, and how many fits may still ask for one: once every fit still
/// going waits, their passes run as one query.
#[derive(Default)]
struct PassQueue {
    live: usize,
    waiting: Vec<(Pass, PassReply)>,
}

impl PassQueue {
    /// The waiting passes, when every fit still going waits for one.
    fn full(&mut self) -> Option<Vec<(Pass, PassReply)>> {
        (!self.waiting.is_empty() && self.waiting.len() >= self.live)
            .then(|| std::mem::take(&mut self.waiting))
    }
}

/// The transformed features, as a table or buffer for passes and as columns for the sample.
pub(super) struct Data<'a> {
    ctx: &'a SessionContext,
    /// The run table of fitted rows ([`Passes::Plan`] reads it).
    table: &'a str,
    passes: Passes,
    /// For [`Passes::Memory`]: every row's transformed features, row-major (`n * d`).
    xs: Vec<f64>,
    scaled: &'a [Vec<f64>],
    scales: Scales,
    /// For [`Passes::Memory`]: see [`Run::margin`].
    margin: f64,
    seed: u64,
    /// Mean variance of the features: `tol` is relative to it.
    mean_variance: f64,
    queue: std::sync::Mutex<PassQueue>,
}

/// A seeded sample of rows, for silhouettes.
pub(super) struct Sample {
    xs: Vec<f64>,
    d: usize,
}

impl<'a> Data<'a> {
    pub fn new(
        ctx: &'a SessionContext,
        table: &'a str,
        passes: Passes,
        scaled: &'a [Vec<f64>],
        seed: u64,
    ) -> Data<'a> {
        let max_abs: Vec<f64> = scaled
            .iter()
            .map(|v| v.iter().fold(0.0f64, |m, x| m.max(x.abs())))
            .collect();
        let n = scaled.first().map_or(0, Vec::len).max(1) as f64;
        let mean_variance = scaled
            .iter()
            .map(|v| {
                let m = v.iter().sum::<f64>() / n;
                v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n
            })
            .sum::<f64>()
            / scaled.len().max(1) as f64;
        let xs = match passes {
            Passes::Memory => {
                let n = scaled.first().map_or(0, Vec::len);
                (0..n)
                    .flat_map(|i| scaled.iter().map(move |v| v[i]))
                    .collect()
            }
            Passes::Plan | Passes::Auto => Vec::new(),
        };
        Data {
            ctx,
            table,
            passes,
            xs,
            scaled,
            scales: Scales::for_bounds(&max_abs),
            margin: Run::margin_for(&max_abs),
            seed,
            mean_variance,
            queue: Default::default(),
        }
    }

    fn d(&self) -> usize {
        self.scaled.len()
    }

    fn n(&self) -> usize {
        self.scaled.first().map_or(0, Vec::len)
    }

    /// A pass as a DataFusion aggregate over the feature table: batched with the passes of
    /// the other fits going on beside this one ([`Data::fit_all`]), into one query.
    async fn pass(&self, task: Task) -> Result<State, FitError> {
        let pass = Pass {
            scales: self.scales.clone(),
            task,
        };
        let (tx, rx) = futures::channel::oneshot::channel();
        let batch = {
            let mut queue = self.queue.lock().expect("pass queue lock");
            queue.waiting.push((pass, tx));
            queue.full()
        };
        if let Some(batch) = batch {
            self.run_passes(batch).await;
        }
        rx.await
            .map_err(|_| FitError::Data("a k-means pass was dropped".into()))?
    }

    /// Notes that a fit has made its last pass, and runs the passes the fits still going
    /// wait for, if all of them do.
    async fn fit_done(&self) {
        let batch = {
            let mut queue = self.queue.lock().expect("pass queue lock");
            queue.live = queue.live.saturating_sub(1);
            queue.full()
        };
        if let Some(batch) = batch {
            self.run_passes(batch).await;
        }
    }

    /// Runs `batch` as one aggregate query, one `kmeans_pass` per pass, and answers each.
    /// One query instead of one per pass: on a cluster every query is a job, whose
    /// scheduling costs more than a pass over the rows.
    async fn run_passes(&self, batch: Vec<(Pass, PassReply)>) {
        let (passes, replies): (Vec<Pass>, Vec<PassReply>) = batch.into_iter().unzip();
        let args: Vec<Expr> = std::iter::once(col("__row"))
            .chain((0..self.d()).map(|j| col(format!("__f{j}"))))
            .collect();
        let aggregates = passes
            .iter()
            .enumerate()
            .map(|(i, p)| KMeansPass::call(p, args.clone()).alias(format!("state{i}")))
            .collect();
        let states = async {
            let batches = self
                .ctx
                .table(self.table)
                .await?
                .aggregate(vec![], aggregates)?
                .collect()
                .await?;
            let row = batches
                .iter()
                .find(|b| b.num_rows() == 1)
                .ok_or_else(|| FitError::Data("a k-means pass returned no state".into()))?;
            (0..passes.len())
                .map(|i| {
                    let bytes = as_binary_array(row.column(i))?.value(0);
                    State::decode(bytes).map_err(|e| FitError::Data(e.to_string()))
                })
                .collect::<Result<Vec<_>, FitError>>()
        }
        .await;
        match states {
            Ok(states) => {
                for (reply, state) in replies.into_iter().zip(states) {
                    let _ = reply.send(Ok(state));
                }
            }
            Err(e) => {
                let message = match &e {
                    FitError::DataFusion(d) => d.to_string(),
                    FitError::Data(m) => m.clone(),
                };
                let mut e = Some(e);
                for reply in replies {
                    // The first waiter gets the error itself, the others its text.
                    let _ = reply.send(Err(e
                        .take()
                        .unwrap_or_else(|| FitError::Data(message.clone()))));
                }
            }
        }
    }

    /// The fits of every k in `ks`, in order. In memory they run one after the other, each
    /// on every core; as plans they run side by side, their passes batched into one query
    /// per round ([`Data::pass`]): the passes of the largest k, not of all k together.
    pub async fn fit_all(
        &self,
        ks: &[usize],
        n_init: usize,
        max_iter: usize,
        tol: f64,
    ) -> Result<Vec<Fit>, FitError> {
        if self.passes == Passes::Memory {
            let mut fits = Vec::with_capacity(ks.len());
            for &k in ks {
                fits.push(self.fit(k, n_init, max_iter, tol).await?);
            }
            return Ok(fits);
        }
        self.queue.lock().expect("pass queue lock").live = ks.len();
        let fits = ks.iter().map(|&k| async move {
            let fit = self.fit(k, n_init, max_iter, tol).await;
            self.fit_done().await;
            fit
        });
        futures::future::join_all(fits).await.into_iter().collect()
    }

    /// The best of `n_init` k-means++ seeded Lloyd runs.
    pub async fn fit(
        &self,
        k: usize,
        n_init: usize,
        max_iter: usize,
        tol: f64,
    ) -> Result<Fit, FitError> {
        let started = Instant::now();
        let tol = tol * self.mean_variance;
        let (runs, passes) = match self.passes {
            Passes::Memory => self.fit_in_memory(k, n_init, max_iter, tol)?,
            // `Data::new` is given a resolved choice; `auto` reads as `plan` here.
            Passes::Plan | Passes::Auto => self.fit_by_plan(k, n_init, max_iter, tol).await?,
        };
        Ok(self.best_of(k, runs, passes, started))
    }

    /// Every run in memory, one after the other (each run's passes use every core), so that
    /// only one run's per-row bounds are held at a time. The passes counted are those the plan
    /// would make, for the same metric either way.
    fn fit_in_memory(
        &self,
        k: usize,
        n_init: usize,
        max_iter: usize,
        tol: f64,
    ) -> Result<(Vec<Ended>, usize), FitError> {
        let run = Run {
            xs: &self.xs,
            d: self.d(),
            scales: &self.scales,
            seed: self.seed,
            margin: self.margin,
        };
        let runs = (0..n_init as u64)
            .map(|r| {
                run.fit(r, k, max_iter, tol)
                    .map_err(|TooFewPoints(step)| too_few(step, k))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let lloyd = runs.iter().map(|r| r.iterations).max().unwrap_or(0);
        Ok((runs, seeding_passes(k) + lloyd + 1))
    }

    /// Every run at once, each pass a DataFusion aggregate that serves all runs still going.
    async fn fit_by_plan(
        &self,
        k: usize,
        n_init: usize,
        max_iter: usize,
        tol: f64,
    ) -> Result<(Vec<Ended>, usize), FitError> {
        let d = self.d();
        let mut passes = 0;
        let runs: Vec<u64> = (0..n_init as u64).collect();
        let mut centers: Vec<Vec<f64>> = vec![Vec::new(); n_init];

        // k-means++ (greedy, as scikit-learn): the first center uniformly at random, then each
        // next one the best of 2 + ln(k) draws weighted by squared distance. A step is two
        // passes: the rows of the tiles its draws fall in, then each candidate's potential
        // and tile sums, which the next step draws from.
        let trials = 2 + (k as f64).ln() as usize;
        let tiles_len = self.n().div_ceil(TILE_ROWS as usize);
        // Per run: its tile sums, or None while every row weighs 1.
        let mut tiles: Vec<Option<Vec<i128>>> = vec![None; n_init];
        for step in 0..k {
            let candidates = if step == 0 { 1 } else { trials };
            // Per run and candidate: the tile its target falls in and what is left of it there.
            let mut wanted: Vec<Vec<(u64, i128)>> = Vec::with_capacity(n_init);
            for (r, tiles) in tiles.iter().enumerate() {
                let total = tiles.as_ref().map_or(self.n() as i128, |t| t.iter().sum());
                if total == 0 {
                    return Err(too_few(step, k));
                }
                wanted.push(
                    (0..candidates as u64)
                        .map(|j| {
                            let t = target(total, draw(self.seed, runs[r], step as u64, j));
                            match tiles {
                                None => (t as u64 / TILE_ROWS, t % TILE_ROWS as i128),
                                Some(tiles) => {
                                    let (tile, left) = tile_of(tiles, t);
                                    (tile as u64, left)
                                }
                            }
                        })
                        .collect(),
                );
            }
            let gathered = self
                .pass(Task::Gather {
                    centers: centers.clone(),
                    tiles: wanted
                        .iter()
                        .map(|w| {
                            let mut t: Vec<u64> = w.iter().map(|&(tile, _)| tile).collect();
                            t.sort_unstable();
                            t.dedup();
                            t
                        })
                        .collect(),
                    tile_rows: TILE_ROWS,
                })
                .await?;
            passes += 1;
            let drawn: Vec<Vec<f64>> = wanted
                .iter()
                .enumerate()
                .map(|(r, w)| {
                    w.iter()
                        .map(|&(tile, left)| {
                            let rows = gathered.gathered(r as u64, tile, TILE_ROWS);
                            row_in_tile(rows.iter().map(|g| g.weight), left)
                                .map(|i| rows[i].x.clone())
                                .ok_or_else(|| {
                                    FitError::Data("a k-means++ draw fell past its tile".into())
                                })
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map(|xs| xs.concat())
                })
                .collect::<Result<_, _>>()?;
            if step == k - 1 && candidates == 1 {
                centers = drawn;
                break; // k = 1: no potential to compare, no next step to draw for
            }
            let sums = self
                .pass(Task::Potential {
                    centers: centers.clone(),
                    candidates: drawn.clone(),
                    tile_rows: TILE_ROWS,
                    tiles: tiles_len,
                })
                .await?;
            passes += 1;
            let mut at = 0;
            for (r, cands) in drawn.iter().enumerate() {
                let m = cands.len() / d;
                let per: Vec<&[i128]> = sums.ints[at..at + m * tiles_len]
                    .chunks(tiles_len.max(1))
                    .collect();
                at += m * tiles_len;
                let pots: Vec<i128> = per.iter().map(|t| t.iter().sum()).collect();
                let best = (0..m).min_by_key(|&j| (pots[j], j)).unwrap_or(0);
                centers[r].extend_from_slice(&cands[best * d..(best + 1) * d]);
                tiles[r] = Some(per[best].to_vec());
            }
        }

        // Lloyd: every pass serves the runs that have not converged yet.
        let stride = step_stride(k, d);
        let mut iterations = vec![0usize; n_init];
        let mut active: Vec<usize> = (0..n_init).collect();
        for _ in 0..max_iter {
            if active.is_empty() {
                break;
            }
            let state = self
                .pass(Task::Step {
                    k,
                    centers: active.iter().map(|&r| centers[r].clone()).collect(),
                })
                .await?;
            passes += 1;
            let mut still = Vec::with_capacity(active.len());
            for (i, &r) in active.iter().enumerate() {
                let ints = &state.ints[i * stride..(i + 1) * stride];
                let shift = move_centers(ints, &mut centers[r], k, d, &self.scales);
                iterations[r] += 1;
                if shift > tol {
                    still.push(r);
                }
            }
            active = still;
        }

        // A last step over every run's final centers, for their sizes and inertia.
        let state = self
            .pass(Task::Step {
                k,
                centers: centers.clone(),
            })
            .await?;
        passes += 1;
        let runs = centers
            .into_iter()
            .zip(iterations)
            .enumerate()
            .map(|(r, (centers, iterations))| Ended {
                centers,
                iterations,
                ints: state.ints[r * stride..(r + 1) * stride].to_vec(),
            })
            .collect();
        Ok((runs, passes))
    }

    /// The run with the lowest inertia (ties: the first run), its clusters numbered by size.
    fn best_of(&self, k: usize, runs: Vec<Ended>, passes: usize, started: Instant) -> Fit {
        let d = self.d();
        let inertia_of = |r: &Ended| -> i128 { r.ints[k + k * d..].iter().sum() };
        let best = (0..runs.len())
            .min_by_key(|&r| (inertia_of(&runs[r]), r))
            .unwrap_or(0);
        let run = &runs[best];
        let sizes = &run.ints[..k];
        let within: Vec<f64> = run.ints[k + k * d..]
            .iter()
            .map(|&v| unfixed(v, self.scales.squared))
            .collect();

        // Number clusters by size, largest first (ties: the earlier center).
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by_key(|&c| (std::cmp::Reverse(sizes[c]), c));
        Fit {
            k,
            centers: order
                .iter()
                .flat_map(|&c| run.centers[c * d..(c + 1) * d].iter().copied())
                .collect(),
            within: order.iter().map(|&c| within[c]).collect(),
            ids: (0..k as i32).collect(),
            inertia: unfixed(inertia_of(run), self.scales.squared),
            iterations: run.iterations,
            silhouette: f64::NAN,
            seconds: started.elapsed().as_secs_f64(),
            passes,
        }
    }

    /// `size` rows chosen by a hash of the seed and row id: the same rows on every run.
    pub fn sample(&self, size: usize) -> Sample {
        let d = self.d();
        let mut keyed: Vec<(f64, usize)> = (0..self.n())
            .map(|i| (kernel::uniform(self.seed, u64::MAX, 0, 0, i as u64), i))
            .collect();
        if size < keyed.len() {
            keyed.select_nth_unstable_by(size, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            keyed.truncate(size);
        }
        let mut rows: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
        rows.sort_unstable();
        let xs = rows
            .iter()
            .flat_map(|&i| self.scaled.iter().map(move |v| v[i]))
            .collect();
        Sample { xs, d }
    }
}

/// The passes a plan's k-means++ seeding takes: a gather and a potential per step, but no
/// potential when k = 1. The in-memory path reports the same count for the same metric.
fn seeding_passes(k: usize) -> usize {
    2 * k - usize::from(k == 1)
}

fn too_few(step: usize, k: usize) -> FitError {
    FitError::Data(format!(
        "the rows have only {step} distinct points, fewer than k = {k}; lower `k`"
    ))
}

impl Sample {
    /// Mean silhouette of the sample labelled by its nearest centers; NaN for fewer than 2
    /// rows or when every row falls in one cluster.
    pub fn silhouette(&self, centers: &[f64], k: usize) -> f64 {
        if self.xs.is_empty() {
            return f64::NAN;
        }
        let labels: Vec<usize> = self
            .xs
            .chunks_exact(self.d)
            .map(|x| nearest(x, centers, self.d).0)
            .collect();
        kernel::silhouette(&self.xs, &labels, k, self.d)
    }
}
