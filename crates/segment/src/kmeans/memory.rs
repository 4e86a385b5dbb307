//! One k-means run in memory: k-means++ seeding and Lloyd iterations over the row-major
//! buffer, skipping every distance whose outcome is already known.
//!
//! A run computes exactly what the passes of [`Pass::update`](super::kernel::Pass::update)
//! compute over the same rows: the same draws, the same integer sums, the same assignments,
//! ties included. So a fit is the same whichever way its passes run; this way only does less
//! work:
//! - seeding keeps each row's squared distance to its nearest center from step to step, so a
//!   step measures the distance to the newest center only, not to all of them again, and it
//!   folds that into the step's potential pass: one pass a step, where the passes of a plan
//!   take two (a gather for the draws, then the potentials);
//! - Lloyd keeps Hamerly's bounds per row (an upper bound on the distance to its own center,
//!   a lower bound on the distance to any other), moves them by how far the centers moved (as
//!   a drift per cluster, so that a pass rewrites only the rows it measures), and measures a
//!   row only when they no longer prove its center the nearest. The per-cluster
//!   sums are integers (see [`kernel`](super::kernel)), so they are kept from pass to pass: a
//!   row that changes cluster moves its coordinates from one sum to the other, exactly.
//!
//! Bounds are floating point, and rounding could let one claim a center is nearest when a
//! near-tie says otherwise. So a bound proves nothing unless it wins by [`Run::margin`] plus
//! the rounding error its drifts can have gathered; rows that close to a tie are measured, and
//! measured the way the kernel measures them.

use rayon::prelude::*;

use super::kernel::{
    Scales, TILE_ROWS, dist2_d, draw, fixed, row_in_tile, step_stride, target, tile_of, unfixed,
    weight,
};

/// Rows per block of a pass: enough blocks for every core to stay busy, few enough that
/// merging their sums costs nothing. Blocks merge by integer addition and a maximum, so their
/// number never changes a result.
pub(super) const BLOCK_ROWS: usize = 1 << 16;
// A block holds whole tiles, so that blocks' tile sums line up (see `Run::potentials`).
const _: () = assert!(BLOCK_ROWS.is_multiple_of(TILE_ROWS as usize));

/// The rows of one fit and how its sums are kept.
pub(super) struct Run<'a> {
    /// `n * d`, row-major; row ids are the positions, as [`Pass::update`] is given them.
    ///
    /// [`Pass::update`]: super::kernel::Pass::update
    pub xs: &'a [f64],
    pub d: usize,
    pub scales: &'a Scales,
    pub seed: u64,
    /// How much a bound must win by to prove a center nearest, besides the rounding error of
    /// the drifts it is moved by (see `reassign`). Distances here are at most the diameter of
    /// the features' box, and each is off by some 1e-16 of it; 1e-9 of the diameter leaves a
    /// large safety factor and is still far below the gaps bounds usually prove.
    pub margin: f64,
}

/// Where a run ended: its centers, the Lloyd iterations it took, and the sums of a step over
/// its final centers, laid out as [`step_stride`] says (counts, coordinate sums, squared
/// distances).
pub(super) struct Ended {
    pub centers: Vec<f64>,
    pub iterations: usize,
    pub ints: Vec<i128>,
}

/// The draw of a seeding step found no row of positive weight: only `step` distinct points.
#[derive(Debug, PartialEq)]
pub(super) struct TooFewPoints(pub usize);

impl Run<'_> {
    /// The margin for rows in a box of `max_abs` per feature.
    pub fn margin_for(max_abs: &[f64]) -> f64 {
        let diameter = max_abs.iter().map(|m| 4.0 * m * m).sum::<f64>().sqrt();
        1e-9 * diameter.max(f64::MIN_POSITIVE)
    }

    fn n(&self) -> usize {
        self.xs.len() / self.d.max(1)
    }

    /// k-means++ seeding and Lloyd iterations for run `run`; `tol` is already absolute.
    pub fn fit(
        &self,
        run: u64,
        k: usize,
        max_iter: usize,
        tol: f64,
    ) -> Result<Ended, TooFewPoints> {
        // As in the kernel: the distance loops are the hot path, so the dimension is a
        // constant where it is a common one. Every instance computes the same values.
        match self.d {
            1 => self.fit_d::<1>(run, k, max_iter, tol),
            2 => self.fit_d::<2>(run, k, max_iter, tol),
            3 => self.fit_d::<3>(run, k, max_iter, tol),
            4 => self.fit_d::<4>(run, k, max_iter, tol),
            5 => self.fit_d::<5>(run, k, max_iter, tol),
            6 => self.fit_d::<6>(run, k, max_iter, tol),
            8 => self.fit_d::<8>(run, k, max_iter, tol),
            _ => self.fit_d::<0>(run, k, max_iter, tol),
        }
    }

    fn fit_d<const D: usize>(
        &self,
        run: u64,
        k: usize,
        max_iter: usize,
        tol: f64,
    ) -> Result<Ended, TooFewPoints> {
        let mut centers = self.seed_d::<D>(run, k)?;
        let mut rows = Bounds::new(self.n(), k);
        let mut ints = self.assign_all::<D>(&centers, k, &mut rows);
        let mut iterations = 0;
        loop {
            let previous = centers.clone();
            let shift = move_centers(&ints, &mut centers, k, self.d, self.scales);
            iterations += 1;
            let last = shift <= tol || iterations == max_iter;
            self.reassign::<D>(&previous, &centers, k, &mut rows, &mut ints, last);
            if last {
                return Ok(Ended {
                    centers,
                    iterations,
                    ints,
                });
            }
        }
    }

    /// Greedy k-means++, as [`Task::Gather`] and [`Task::Potential`] passes compute it: the
    /// first center drawn uniformly, each next one the best of 2 + ln(k) draws weighted by
    /// squared distance to the centers so far. Each row's squared distance to its nearest
    /// center is carried from step to step, and brought up to date with the newest center in
    /// the pass that measures the next candidates.
    ///
    /// [`Task::Gather`]: super::kernel::Task::Gather
    /// [`Task::Potential`]: super::kernel::Task::Potential
    fn seed_d<const D: usize>(&self, run: u64, k: usize) -> Result<Vec<f64>, TooFewPoints> {
        let (d, n) = (self.d, self.n());
        let trials = 2 + (k as f64).ln() as usize;
        let mut nearest = vec![f64::INFINITY; n];
        // The center `nearest` does not count yet, and the tile sums of the weights with it.
        let mut pending: Option<Vec<f64>> = None;
        let mut tiles: Option<Vec<i128>> = None;
        let mut centers: Vec<f64> = Vec::with_capacity(k * d);
        for step in 0..k {
            let candidates = if step == 0 { 1 } else { trials };
            let total = tiles.as_ref().map_or(n as i128, |t| t.iter().sum());
            if total == 0 {
                return Err(TooFewPoints(step));
            }
            let drawn: Vec<f64> = (0..candidates as u64)
                .flat_map(|j| {
                    let t = target(total, draw(self.seed, run, step as u64, j));
                    let row = match &tiles {
                        None => t as usize, // every row weighs 1
                        Some(tiles) => self.row_at::<D>(tiles, t, &nearest, pending.as_deref()),
                    };
                    self.xs[row * d..(row + 1) * d].iter().copied()
                })
                .collect();
            if step == k - 1 && candidates == 1 {
                centers.extend_from_slice(&drawn);
                break; // k = 1: no potential to compare, no next step to draw for
            }
            let sums = self.potentials::<D>(&drawn, &mut nearest, pending.as_deref());
            let pots: Vec<i128> = sums.iter().map(|t| t.iter().sum()).collect();
            let best = (0..candidates).min_by_key(|&j| (pots[j], j)).unwrap_or(0);
            let chosen = &drawn[best * d..(best + 1) * d];
            centers.extend_from_slice(chosen);
            pending = Some(chosen.to_vec());
            tiles = sums.into_iter().nth(best);
        }
        Ok(centers)
    }

    /// The row draw target `t` lands on: its tile from the tile sums, then the tile's rows in
    /// order, each weighing its distance to the nearest of the centers so far (`nearest`, and
    /// `pending` if it does not count it yet).
    fn row_at<const D: usize>(
        &self,
        tiles: &[i128],
        t: i128,
        nearest: &[f64],
        pending: Option<&[f64]>,
    ) -> usize {
        let d = self.d;
        let (tile, left) = tile_of(tiles, t);
        let start = tile * TILE_ROWS as usize;
        let end = (start + TILE_ROWS as usize).min(nearest.len());
        let weights = (start..end).map(|i| {
            let x = &self.xs[i * d..(i + 1) * d];
            let dd = pending.map_or(nearest[i], |c| dist2_d::<D>(x, c, d).min(nearest[i]));
            weight(dd, self.scales)
        });
        // The tile's sum is above `left`, so some row passes it; the last is a fallback that
        // only a miscounted tile could reach.
        start + row_in_tile(weights, left).unwrap_or(end - start - 1)
    }

    /// One pass for a step: brings `nearest` up to date with `pending`, then sums per tile the
    /// weights each of the `drawn` candidates would leave. One list of tile sums per candidate.
    fn potentials<const D: usize>(
        &self,
        drawn: &[f64],
        nearest: &mut [f64],
        pending: Option<&[f64]>,
    ) -> Vec<Vec<i128>> {
        let d = self.d;
        let m = drawn.len() / d;
        let tile = TILE_ROWS as usize;
        // Blocks are whole tiles, and collect keeps their order: the tiles come out in row
        // order, whatever thread summed them.
        let blocks: Vec<Vec<Vec<i128>>> = self
            .xs
            .par_chunks(BLOCK_ROWS * d)
            .zip(nearest.par_chunks_mut(BLOCK_ROWS))
            .map(|(xs, nearest)| {
                let mut sums = vec![Vec::with_capacity(BLOCK_ROWS / tile); m];
                for (xs, nearest) in xs.chunks(tile * d).zip(nearest.chunks_mut(tile)) {
                    let mut acc = vec![0i128; m];
                    for (x, current) in xs.chunks_exact(d).zip(nearest) {
                        if let Some(c) = pending {
                            let dd = dist2_d::<D>(x, c, d);
                            if dd < *current {
                                *current = dd;
                            }
                        }
                        for (a, cand) in acc.iter_mut().zip(drawn.chunks_exact(d)) {
                            *a += weight(dist2_d::<D>(x, cand, d).min(*current), self.scales);
                        }
                    }
                    for (s, a) in sums.iter_mut().zip(acc) {
                        s.push(a);
                    }
                }
                sums
            })
            .collect();
        (0..m)
            .map(|j| blocks.iter().flat_map(|b| b[j].iter().copied()).collect())
            .collect()
    }

    /// The first step: every row measured against every center; the step's counts and
    /// coordinate sums (its squared distances are summed only by the last step).
    fn assign_all<const D: usize>(
        &self,
        centers: &[f64],
        k: usize,
        rows: &mut Bounds,
    ) -> Vec<i128> {
        let d = self.d;
        let stride = step_stride(k, d);
        // No center has moved yet: every drift is 0.
        rows.rows
            .par_blocks(self.xs, d)
            .map(|(xs, label, upper, lower)| {
                let mut ints = vec![0i128; stride];
                for (i, x) in xs.chunks_exact(d).enumerate() {
                    let (best, best_dd, second_dd) = nearest2_d::<D>(x, centers, d);
                    label[i] = best as u32;
                    upper[i] = best_dd.sqrt();
                    lower[i] = second_dd.sqrt();
                    self.add_row(&mut ints, k, best, x, 1);
                }
                ints
            })
            .reduce(|| vec![0; stride], add)
    }

    /// A step over centers that moved from `previous` to `centers`: moves the bounds, measures
    /// the rows they no longer settle, and moves those that changed cluster from one sum to
    /// the other. The `last` step also sums every row's squared distance to its center (which
    /// needs each of them measured, so its upper bound is tightened first).
    fn reassign<const D: usize>(
        &self,
        previous: &[f64],
        centers: &[f64],
        k: usize,
        rows: &mut Bounds,
        ints: &mut [i128],
        last: bool,
    ) {
        let d = self.d;
        let stride = step_stride(k, d);
        let moved: Vec<f64> = (0..k)
            .map(|c| dist2_d::<D>(&previous[c * d..], &centers[c * d..], d).sqrt())
            .collect();
        // The lower bound of a row in cluster a falls by the most any other center moved.
        let (mut most, mut most_at, mut second) = (0.0f64, usize::MAX, 0.0f64);
        for (c, &m) in moved.iter().enumerate() {
            if m > most {
                (second, most, most_at) = (most, m, c);
            } else if m > second {
                second = m;
            }
        }
        // Half the distance from each center to its nearest other center: a row closer than
        // that to its center is closer to it than to any other.
        let half: Vec<f64> = (0..k)
            .map(|a| {
                let nearest_other = (0..k)
                    .filter(|&c| c != a)
                    .map(|c| dist2_d::<D>(&centers[a * d..], &centers[c * d..], d))
                    .fold(f64::INFINITY, f64::min);
                0.5 * nearest_other.sqrt()
            })
            .collect();
        // The bounds move lazily: a row keeps its bounds as of its last measurement, offset by
        // its cluster's drifts then, and the drifts grow here, once per cluster, instead of
        // every row's bounds being rewritten every pass (most rows are not measured, so a
        // pass only reads them).
        rows.steps += 1;
        for (c, (up, low)) in rows
            .upper_drift
            .iter_mut()
            .zip(&mut rows.lower_drift)
            .enumerate()
        {
            *up += moved[c];
            *low += if c == most_at { second } else { most };
        }
        let (up, low) = (&rows.upper_drift[..], &rows.lower_drift[..]);
        // What a bound must win by: the margin, and the rounding error of the drifts. A sum
        // of s non-negative terms is off by at most s * epsilon of itself; a bound adds one
        // drift to, or takes it from, an offset that was rounded against it too.
        let slack: Vec<f64> = (0..k)
            .map(|c| {
                let error = 4.0 * rows.steps as f64 * f64::EPSILON * (up[c] + low[c]);
                self.margin + error
            })
            .collect();
        let squared = self.scales.squared;
        let delta = rows
            .rows
            .par_blocks(self.xs, d)
            .map(|(xs, label, upper, lower)| {
                let mut delta = vec![0i128; stride];
                for (i, x) in xs.chunks_exact(d).enumerate() {
                    let a = label[i] as usize;
                    let bound = half[a].max(lower[i] - low[a]);
                    if !last && upper[i] + up[a] + slack[a] < bound {
                        continue;
                    }
                    let own = dist2_d::<D>(x, &centers[a * d..], d);
                    let own_root = own.sqrt();
                    if own_root + slack[a] < bound {
                        upper[i] = own_root - up[a];
                        if last {
                            delta[k + k * d + a] += fixed(own, squared);
                        }
                        continue;
                    }
                    let (best, best_dd, second_dd) = nearest2_d::<D>(x, centers, d);
                    label[i] = best as u32;
                    upper[i] = best_dd.sqrt() - up[best];
                    lower[i] = second_dd.sqrt() + low[best];
                    if best != a {
                        self.add_row(&mut delta, k, a, x, -1);
                        self.add_row(&mut delta, k, best, x, 1);
                    }
                    if last {
                        delta[k + k * d + best] += fixed(best_dd, squared);
                    }
                }
                delta
            })
            .reduce(|| vec![0; stride], add);
        for (s, v) in ints.iter_mut().zip(&delta) {
            *s += v;
        }
        // Only the last step's squared distances are kept; earlier steps never summed any.
        if !last {
            debug_assert!(ints[k + k * d..].iter().all(|&v| v == 0));
        }
    }

    /// Adds (`sign` 1) or removes (-1) row `x` to or from cluster `c`'s count and sums.
    #[inline]
    fn add_row(&self, ints: &mut [i128], k: usize, c: usize, x: &[f64], sign: i128) {
        let d = self.d;
        ints[c] += sign;
        for j in 0..d {
            ints[k + c * d + j] += sign * fixed(x[j], self.scales.features[j]);
        }
    }
}

/// New centers from a step's sums (an empty cluster keeps its center) and the squared
/// distance they moved in all: the Lloyd update both ways of running passes share.
pub(super) fn move_centers(
    ints: &[i128],
    centers: &mut [f64],
    k: usize,
    d: usize,
    scales: &Scales,
) -> f64 {
    let mut shift = 0.0;
    for c in 0..k {
        let count = ints[c];
        if count == 0 {
            continue; // an empty cluster keeps its center
        }
        for j in 0..d {
            let sum = unfixed(ints[k + c * d + j], scales.features[j]);
            let new = sum / count as f64;
            let old = &mut centers[c * d + j];
            shift += (new - *old) * (new - *old);
            *old = new;
        }
    }
    shift
}

/// Hamerly's bounds: per row its cluster and two bounds, per cluster how far they have moved.
struct Bounds {
    rows: RowBounds,
    /// Per cluster: the sum of how far its center moved, over the steps so far. A row's upper
    /// bound is `upper + upper_drift[label]`.
    upper_drift: Vec<f64>,
    /// Per cluster: the sum over the steps of the most any other center moved. A row's lower
    /// bound is `lower - lower_drift[label]`.
    lower_drift: Vec<f64>,
    /// The steps the drifts have summed, for their rounding error.
    steps: usize,
}

/// Per row: its cluster and its bounds as of its last measurement, less (upper) or plus (lower)
/// its cluster's drift then.
struct RowBounds {
    label: Vec<u32>,
    upper: Vec<f64>,
    lower: Vec<f64>,
}

type Block<'a> = (&'a [f64], &'a mut [u32], &'a mut [f64], &'a mut [f64]);

impl Bounds {
    fn new(n: usize, k: usize) -> Bounds {
        Bounds {
            rows: RowBounds {
                label: vec![0; n],
                upper: vec![0.0; n],
                lower: vec![0.0; n],
            },
            upper_drift: vec![0.0; k],
            lower_drift: vec![0.0; k],
            steps: 0,
        }
    }
}

impl RowBounds {
    /// The rows in blocks of [`BLOCK_ROWS`], in parallel: coordinates and state side by side.
    fn par_blocks<'a>(
        &'a mut self,
        xs: &'a [f64],
        d: usize,
    ) -> impl IndexedParallelIterator<Item = Block<'a>> {
        xs.par_chunks(BLOCK_ROWS * d)
            .zip(self.label.par_chunks_mut(BLOCK_ROWS))
            .zip(self.upper.par_chunks_mut(BLOCK_ROWS))
            .zip(self.lower.par_chunks_mut(BLOCK_ROWS))
            .map(|(((xs, label), upper), lower)| (xs, label, upper, lower))
    }
}

/// The nearest center (ties to the lower index, as [`kernel::nearest`](super::kernel::nearest)), its squared distance, and
/// the squared distance to the nearest of the others (infinite for one center).
#[inline(always)]
fn nearest2_d<const D: usize>(x: &[f64], centers: &[f64], d: usize) -> (usize, f64, f64) {
    let d = if D == 0 { d } else { D };
    let (mut best, mut best_dd, mut second_dd) = (0, f64::INFINITY, f64::INFINITY);
    for (c, center) in centers.chunks_exact(d).enumerate() {
        let dd = dist2_d::<D>(x, center, d);
        if dd < best_dd {
            (second_dd, best_dd, best) = (best_dd, dd, c);
        } else if dd < second_dd {
            second_dd = dd;
        }
    }
    (best, best_dd, second_dd)
}

fn add(mut a: Vec<i128>, b: Vec<i128>) -> Vec<i128> {
    for (a, b) in a.iter_mut().zip(b) {
        *a += b;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::super::kernel::{Pass, State, Task, uniform};
    use super::*;

    /// The same run the unbounded way: every pass a full [`Pass::update`] over all rows.
    fn reference(
        run: &Run,
        r: u64,
        k: usize,
        max_iter: usize,
        tol: f64,
    ) -> Result<Ended, TooFewPoints> {
        let (xs, d, scales, seed) = (run.xs, run.d, run.scales, run.seed);
        let rows: Vec<u64> = (0..(xs.len() / d) as u64).collect();
        let pass = |task: Task| -> State {
            let pass = Pass {
                scales: scales.clone(),
                task,
            };
            let mut state = pass.empty_state();
            pass.update(&mut state, &rows, xs);
            state
        };
        // Seeding as the plan runs it: a gather pass for each step's draws, then a potential
        // pass, with tiles of 7 rows (not TILE_ROWS): a draw lands on the same row whatever
        // the tiles, and small ones put many tile edges among the rows.
        let tile_rows = 7u64;
        let tiles_len = rows.len().div_ceil(tile_rows as usize);
        let trials = 2 + (k as f64).ln() as usize;
        let mut centers: Vec<f64> = Vec::new();
        let mut tiles: Option<Vec<i128>> = None;
        for step in 0..k {
            let candidates = if step == 0 { 1 } else { trials };
            let total = tiles
                .as_ref()
                .map_or(rows.len() as i128, |t| t.iter().sum());
            if total == 0 {
                return Err(TooFewPoints(step));
            }
            let wanted: Vec<(u64, i128)> = (0..candidates as u64)
                .map(|j| {
                    let t = target(total, draw(seed, r, step as u64, j));
                    match &tiles {
                        None => (t as u64 / tile_rows, t % tile_rows as i128),
                        Some(tiles) => {
                            let (tile, left) = tile_of(tiles, t);
                            (tile as u64, left)
                        }
                    }
                })
                .collect();
            let gathered = pass(Task::Gather {
                centers: vec![centers.clone()],
                tiles: vec![wanted.iter().map(|w| w.0).collect()],
                tile_rows,
            });
            let drawn: Vec<f64> = wanted
                .iter()
                .flat_map(|&(tile, left)| {
                    let rows = gathered.gathered(0, tile, tile_rows);
                    let i = row_in_tile(rows.iter().map(|g| g.weight), left).unwrap();
                    rows[i].x.clone()
                })
                .collect();
            if step == k - 1 && candidates == 1 {
                centers = drawn;
                break;
            }
            let sums = pass(Task::Potential {
                centers: vec![centers.clone()],
                candidates: vec![drawn.clone()],
                tile_rows,
                tiles: tiles_len,
            })
            .ints;
            let per: Vec<&[i128]> = sums.chunks(tiles_len).collect();
            let pots: Vec<i128> = per.iter().map(|t| t.iter().sum()).collect();
            let best = (0..pots.len()).min_by_key(|&j| (pots[j], j)).unwrap();
            centers.extend_from_slice(&drawn[best * d..(best + 1) * d]);
            tiles = Some(per[best].to_vec());
        }
        let mut iterations = 0;
        while iterations < max_iter {
            let ints = pass(Task::Step {
                k,
                centers: vec![centers.clone()],
            })
            .ints;
            iterations += 1;
            if move_centers(&ints, &mut centers, k, d, scales) <= tol {
                break;
            }
        }
        let ints = pass(Task::Step {
            k,
            centers: vec![centers.clone()],
        })
        .ints;
        Ok(Ended {
            centers,
            iterations,
            ints,
        })
    }

    /// Points around `blobs` centers, on a coarse grid so that ties and duplicates are common.
    fn points(n: usize, d: usize, blobs: usize, seed: u64) -> Vec<f64> {
        (0..n * d)
            .map(|i| {
                let blob = (i / d) % blobs;
                let u = uniform(seed, 1, 2, 3, i as u64);
                let noise = ((u - 0.5) * 8.0).round() / 4.0;
                (blob as f64) * 1.5 + noise
            })
            .collect()
    }

    fn check(n: usize, d: usize, k: usize, seed: u64) {
        let xs = points(n, d, 4, seed);
        let max_abs: Vec<f64> = (0..d)
            .map(|j| {
                xs.iter()
                    .skip(j)
                    .step_by(d)
                    .fold(0.0f64, |m, v| m.max(v.abs()))
            })
            .collect();
        let scales = Scales::for_bounds(&max_abs);
        let run = Run {
            xs: &xs,
            d,
            scales: &scales,
            seed,
            margin: Run::margin_for(&max_abs),
        };
        for r in 0..3 {
            let want = reference(&run, r, k, 300, 1e-8);
            let got = run.fit(r, k, 300, 1e-8);
            match (want, got) {
                (Ok(want), Ok(got)) => {
                    assert_eq!(
                        got.centers, want.centers,
                        "n {n} d {d} k {k} seed {seed} run {r}"
                    );
                    assert_eq!(got.iterations, want.iterations);
                    assert_eq!(got.ints, want.ints);
                }
                (want, got) => assert_eq!(want.err(), got.err()),
            }
        }
    }

    #[test]
    fn bounded_runs_equal_full_passes_ties_and_duplicates_included() {
        // Blocks of BLOCK_ROWS: one block, and several (the last one short).
        check(500, 2, 5, 1);
        check(2000, 3, 8, 2);
        check(2 * BLOCK_ROWS + 123, 3, 4, 3);
        check(3000, 7, 3, 4); // a dimension without its own instance
        check(800, 1, 6, 5);
        check(300, 2, 1, 6); // k = 1: one uniform draw, no potential
    }

    #[test]
    fn too_few_distinct_points_is_the_same_error() {
        let xs = [1.0, 1.0, 2.0, 2.0, 1.0, 1.0];
        let scales = Scales::for_bounds(&[2.0, 2.0]);
        let run = Run {
            xs: &xs,
            d: 2,
            scales: &scales,
            seed: 9,
            margin: Run::margin_for(&[2.0, 2.0]),
        };
        assert_eq!(run.fit(0, 3, 10, 0.0).err(), Some(TooFewPoints(2)));
        assert_eq!(reference(&run, 0, 3, 10, 0.0).err(), Some(TooFewPoints(2)));
    }
}
