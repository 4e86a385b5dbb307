//! The arithmetic of k-means: distances, the work of one pass over a block of rows, and the
//! state that passes merge.
//!
//! Determinism is the design constraint. A pass over the data is a DataFusion aggregate, so its
//! rows arrive in batches and partitions whose boundaries and merge order depend on the number
//! of threads. Floating-point sums depend on that order; segflow's must not. So every sum a pass
//! keeps is exact: each value is converted to a fixed-point integer on a power-of-two grid
//! chosen from the feature's largest magnitude ([`Scales`]), and the integers are added as
//! `i128`. Integer addition is associative, so partitions may merge in any order and the sum is
//! the same bit for bit.
//!
//! k-means++ draws are inverse-CDF draws over the rows in row-id order (ids are positions in
//! key order, fixed before any pass): a hash of (seed, run, step, candidate) picks a target
//! below the exact integer sum of the rows' weights, and the row where the running sum of
//! weights passes the target is drawn. The sums are kept per tile of [`TILE_ROWS`] row ids
//! ([`Task::Potential`]), so a draw finds its tile from them and reads only that tile's rows
//! ([`Task::Gather`]), in row-id order whatever order they came in. No pass hashes a row.

use std::fmt;

/// Power-of-two scales that turn a feature value (or a squared distance) into an integer whose
/// magnitude stays below 2^61, so that sums over up to 2^66 rows fit an `i128`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scales {
    /// One per feature: 2^e with |value| * 2^e < 2^61.
    pub features: Vec<f64>,
    /// For squared distances between a row and a center (both inside the features' ranges).
    pub squared: f64,
}

impl Scales {
    /// Scales for features whose absolute values are at most `max_abs`.
    pub fn for_bounds(max_abs: &[f64]) -> Scales {
        // A squared distance between two points of the box is at most the sum of (2 max)^2.
        let bound: f64 = max_abs.iter().map(|m| (2.0 * m) * (2.0 * m)).sum();
        Scales {
            features: max_abs.iter().map(|&m| grid(m)).collect(),
            squared: grid(bound),
        }
    }

    pub fn dims(&self) -> usize {
        self.features.len()
    }
}

/// 2^e such that `bound * 2^e < 2^61`; tiny or zero bounds get a fine but finite grid.
fn grid(bound: f64) -> f64 {
    let bound = bound.max(2f64.powi(-30));
    let e = 61 - (bound.log2().floor() as i32 + 1);
    2f64.powi(e)
}

/// A value on a fixed-point grid. Truncation (not rounding) is as deterministic and cheaper.
#[inline]
pub fn fixed(value: f64, scale: f64) -> i128 {
    (value * scale) as i64 as i128
}

/// Back from the grid.
#[inline]
pub fn unfixed(value: i128, scale: f64) -> f64 {
    value as f64 / scale
}

/// Squared Euclidean distance, summed over the dimensions in order.
#[inline]
pub fn dist2(a: &[f64], b: &[f64]) -> f64 {
    dist2_d::<0>(a, b, a.len())
}

/// The nearest of the centers (`k * d` values, row-major) and its squared distance; ties go to
/// the lower index, so an assignment never depends on anything but the row and the centers.
#[inline]
pub fn nearest(x: &[f64], centers: &[f64], d: usize) -> (usize, f64) {
    nearest_d::<0>(x, centers, d)
}

/// Row ids per tile: the unit in which seeding passes sum the weights of k-means++ draws (see
/// the module doc). Small enough that a draw reads few rows, large enough that the sums of a
/// pass stay a few thousand integers for millions of rows.
pub const TILE_ROWS: u64 = 4096;

/// The most tiles a potential pass may have: 2^24 tiles of [`TILE_ROWS`] are 2^36 rows.
const MAX_TILES: usize = 1 << 24;

/// A uniform draw in (0, 1) that depends only on its inputs.
#[inline]
pub fn uniform(seed: u64, run: u64, step: u64, candidate: u64, row: u64) -> f64 {
    let h = splitmix(draw(seed, run, step, candidate) ^ row);
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// The random bits of k-means++ draw `candidate` of `step` in run `run`.
#[inline]
pub fn draw(seed: u64, run: u64, step: u64, candidate: u64) -> u64 {
    let h = splitmix(seed ^ splitmix(run.wrapping_add(0x9e37_79b9)));
    splitmix(h ^ step.rotate_left(17) ^ candidate.rotate_left(41))
}

/// The weight a row of squared distance `dd` to its nearest center has in a k-means++ draw:
/// the distance on the squared grid, so that weights sum exactly. A row on a center weighs 0
/// and is never drawn again.
#[inline]
pub fn weight(dd: f64, scales: &Scales) -> i128 {
    fixed(dd, scales.squared)
}

/// Where draw `bits` falls among weights summing to `total` (> 0): floor(total * u) for the
/// uniform u = (bits >> 11) / 2^53 in [0, 1), computed exactly, so always below `total`.
pub fn target(total: i128, bits: u64) -> i128 {
    debug_assert!(total > 0);
    let (total, u) = (total as u128, (bits >> 11) as u128);
    // total * u / 2^53 with total split in 64-bit halves: (hi * 2^64 + lo) * u / 2^53 is
    // hi * u * 2^11 (an integer) plus lo * u / 2^53; neither product overflows.
    let (hi, lo) = (total >> 64, total & u128::from(u64::MAX));
    (((hi * u) << 11) + ((lo * u) >> 53)) as i128
}

/// The tile `target` falls in, given each tile's sum of weights, and what is left of the
/// target at the tile's start. The tile has weight: an empty tile never holds a target.
pub fn tile_of(tiles: &[i128], target: i128) -> (usize, i128) {
    let mut left = target;
    for (t, &sum) in tiles.iter().enumerate() {
        if left < sum {
            return (t, left);
        }
        left -= sum;
    }
    // Only for a target at or past the total, which `target` never gives.
    (tiles.len().saturating_sub(1), left)
}

/// The position, in a tile's `weights` (row-id order), of the row where their running sum
/// first passes `left`: the row the draw lands on. None only if `left` is not below their sum.
pub fn row_in_tile(weights: impl IntoIterator<Item = i128>, left: i128) -> Option<usize> {
    let mut sum = 0;
    for (i, w) in weights.into_iter().enumerate() {
        sum += w;
        if left < sum {
            return Some(i);
        }
    }
    None
}

#[inline]
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What one pass computes, for several independent runs (n_init) at once so that each pass
/// reads the data once however many runs are still going.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// A Lloyd step: per run, assign every row to its nearest center and sum per center the
    /// rows (count, coordinates) and their squared distances.
    Step { k: usize, centers: Vec<Vec<f64>> },
    /// k-means++ weights, per run and candidate: the squared distance of every row to its
    /// nearest center if the candidate were added to the run's centers, as a [`weight`],
    /// summed per tile of `tile_rows` row ids (`tiles` of them). Their total is the potential
    /// the candidate would leave (greedy k-means++ keeps the lowest); the tiles of the kept
    /// one locate the next step's draws.
    Potential {
        centers: Vec<Vec<f64>>,
        candidates: Vec<Vec<f64>>,
        tile_rows: u64,
        tiles: usize,
    },
    /// The rows of some tiles with their weights under each run's centers (1 for a run with
    /// none, a uniform draw): the rows a draw's target may fall on, in whatever order they
    /// come; [`State::gathered`] puts them in row-id order.
    Gather {
        centers: Vec<Vec<f64>>,
        tiles: Vec<Vec<u64>>,
        tile_rows: u64,
    },
}

/// A task with the grid it sums on: the literal argument of `kmeans_pass`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pass {
    pub scales: Scales,
    pub task: Task,
}

impl Pass {
    pub fn dims(&self) -> usize {
        self.scales.dims()
    }

    /// The row ids a pass can take: a potential sums rows per tile, so its rows must fall in
    /// its tiles. Row ids are positions, so only a plan edited by hand can break this.
    pub fn takes_row(&self, row: u64) -> bool {
        match &self.task {
            Task::Potential {
                tile_rows, tiles, ..
            } => row / tile_rows < *tiles as u64,
            _ => true,
        }
    }

    /// An empty state of the right shape.
    pub fn empty_state(&self) -> State {
        let d = self.dims();
        let ints = match &self.task {
            Task::Step { k, centers } => centers.len() * step_stride(*k, d),
            Task::Potential {
                candidates, tiles, ..
            } => candidates.iter().map(|c| c.len() / d).sum::<usize>() * tiles,
            Task::Gather { .. } => 0,
        };
        State {
            ints: vec![0; ints],
            rows: Vec::new(),
        }
    }

    /// Adds a block of rows (`xs`: `rows.len() * d` values, row-major) to `state`.
    pub fn update(&self, state: &mut State, rows: &[u64], xs: &[f64]) {
        // The distance loops are the hot path; with the dimension a constant the compiler
        // unrolls them. Every instance computes the same sums in the same order, so which one
        // runs never changes a result.
        match self.dims() {
            1 => self.update_with::<1>(state, rows, xs),
            2 => self.update_with::<2>(state, rows, xs),
            3 => self.update_with::<3>(state, rows, xs),
            4 => self.update_with::<4>(state, rows, xs),
            5 => self.update_with::<5>(state, rows, xs),
            6 => self.update_with::<6>(state, rows, xs),
            8 => self.update_with::<8>(state, rows, xs),
            _ => self.update_with::<0>(state, rows, xs),
        }
    }

    /// [`Pass::update`] for dimension `D` (0: any, read at run time).
    #[inline(always)]
    fn update_with<const D: usize>(&self, state: &mut State, rows: &[u64], xs: &[f64]) {
        let d = if D == 0 { self.dims() } else { D };
        let scales = &self.scales;
        match &self.task {
            Task::Step { k, centers } => {
                let k = *k;
                let stride = step_stride(k, d);
                let mut fixed_x = vec![0i128; d];
                for x in xs.chunks_exact(d) {
                    for j in 0..d {
                        fixed_x[j] = fixed(x[j], scales.features[j]);
                    }
                    for (r, c) in centers.iter().enumerate() {
                        let (best, dd) = nearest_d::<D>(x, c, d);
                        let ints = &mut state.ints[r * stride..(r + 1) * stride];
                        ints[best] += 1;
                        let sums = &mut ints[k + best * d..k + best * d + d];
                        for (s, f) in sums.iter_mut().zip(&fixed_x) {
                            *s += f;
                        }
                        ints[k + k * d + best] += fixed(dd, scales.squared);
                    }
                }
            }
            Task::Potential {
                centers,
                candidates,
                tile_rows,
                tiles,
            } => {
                // Per run and candidate, `tiles` sums in a row: the state's layout.
                let tiles = *tiles;
                for (x, &row) in xs.chunks_exact(d).zip(rows) {
                    let tile = (row / tile_rows) as usize;
                    let mut at = tile;
                    for (c, cands) in centers.iter().zip(candidates) {
                        let current = nearest_d::<D>(x, c, d).1;
                        for cand in cands.chunks_exact(d) {
                            let dd = dist2_d::<D>(x, cand, d).min(current);
                            state.ints[at] += weight(dd, scales);
                            at += tiles;
                        }
                    }
                }
            }
            Task::Gather {
                centers,
                tiles,
                tile_rows,
            } => {
                for (x, &row) in xs.chunks_exact(d).zip(rows) {
                    let tile = row / tile_rows;
                    for (r, (c, wanted)) in centers.iter().zip(tiles).enumerate() {
                        if !wanted.contains(&tile) {
                            continue;
                        }
                        let weight = if c.is_empty() {
                            1
                        } else {
                            weight(nearest_d::<D>(x, c, d).1, scales)
                        };
                        state.rows.push(Gathered {
                            run: r as u64,
                            row,
                            weight,
                            x: x.to_vec(),
                        });
                    }
                }
            }
        }
    }
}

/// [`dist2`] with the dimension `D` known at compile time (0: `d`). Same order of sums.
#[inline(always)]
pub(super) fn dist2_d<const D: usize>(a: &[f64], b: &[f64], d: usize) -> f64 {
    let d = if D == 0 { d } else { D };
    let (a, b) = (&a[..d], &b[..d]);
    let mut s = 0.0;
    for j in 0..d {
        let t = a[j] - b[j];
        s += t * t;
    }
    s
}

/// [`nearest`] with the dimension `D` known at compile time (0: `d`).
#[inline(always)]
fn nearest_d<const D: usize>(x: &[f64], centers: &[f64], d: usize) -> (usize, f64) {
    let d = if D == 0 { d } else { D };
    let mut best = (0, f64::INFINITY);
    for (c, center) in centers.chunks_exact(d).enumerate() {
        let dd = dist2_d::<D>(x, center, d);
        if dd < best.1 {
            best = (c, dd);
        }
    }
    best
}

/// Integers per run of a step: counts (k), coordinate sums (k * d), squared distances (k).
pub fn step_stride(k: usize, d: usize) -> usize {
    k + k * d + k
}

/// What a pass has accumulated: exact integer sums, and gathered rows. Merging adds the sums
/// and pools the rows, both independent of order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct State {
    pub ints: Vec<i128>,
    pub rows: Vec<Gathered>,
}

/// A row a [`Task::Gather`] pass collected for run `run` (its index in the task's lists).
#[derive(Debug, Clone, PartialEq)]
pub struct Gathered {
    pub run: u64,
    pub row: u64,
    pub weight: i128,
    pub x: Vec<f64>,
}

impl State {
    pub fn merge(&mut self, other: &State) -> Result<(), WireError> {
        if self.ints.len() != other.ints.len() {
            return Err(WireError("k-means states of different shapes"));
        }
        for (a, b) in self.ints.iter_mut().zip(&other.ints) {
            *a += b;
        }
        self.rows.extend_from_slice(&other.rows);
        Ok(())
    }

    /// The gathered rows of run `run` in tile `tile` (of `tile_rows` ids), in row-id order:
    /// the order a draw reads them in, whatever order partitions merged in.
    pub fn gathered(&self, run: u64, tile: u64, tile_rows: u64) -> Vec<&Gathered> {
        let mut rows: Vec<&Gathered> = self
            .rows
            .iter()
            .filter(|g| g.run == run && g.row / tile_rows == tile)
            .collect();
        rows.sort_by_key(|g| g.row);
        rows
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.ints.len() as u64);
        for &v in &self.ints {
            w.bytes(&v.to_le_bytes());
        }
        w.u64(self.rows.len() as u64);
        for g in &self.rows {
            w.u64(g.run);
            w.u64(g.row);
            w.bytes(&g.weight.to_le_bytes());
            w.f64s(&g.x);
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<State, WireError> {
        let mut r = Reader(bytes);
        let n = r.len()?;
        let mut ints = Vec::with_capacity(n);
        for _ in 0..n {
            ints.push(i128::from_le_bytes(r.take::<16>()?));
        }
        let n = r.len()?;
        let mut rows = Vec::with_capacity(n);
        for _ in 0..n {
            rows.push(Gathered {
                run: r.u64()?,
                row: r.u64()?,
                weight: i128::from_le_bytes(r.take::<16>()?),
                x: r.f64s()?,
            });
        }
        r.end()?;
        Ok(State { ints, rows })
    }
}

impl Pass {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.f64s(&self.scales.features);
        w.f64(self.scales.squared);
        match &self.task {
            Task::Step { k, centers } => {
                w.u64(0);
                w.u64(*k as u64);
                w.nested(centers);
            }
            Task::Potential {
                centers,
                candidates,
                tile_rows,
                tiles,
            } => {
                w.u64(2);
                w.nested(centers);
                w.nested(candidates);
                w.u64(*tile_rows);
                w.u64(*tiles as u64);
            }
            Task::Gather {
                centers,
                tiles,
                tile_rows,
            } => {
                w.u64(3);
                w.nested(centers);
                w.u64(tiles.len() as u64);
                for t in tiles {
                    w.u64s(t);
                }
                w.u64(*tile_rows);
            }
        }
        w.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Pass, WireError> {
        let mut r = Reader(bytes);
        let features = r.f64s()?;
        let squared = r.f64()?;
        let task = match r.u64()? {
            0 => Task::Step {
                k: r.len()?,
                centers: r.nested()?,
            },
            2 => Task::Potential {
                centers: r.nested()?,
                candidates: r.nested()?,
                tile_rows: r.u64()?,
                // Bounded by `check`, as every tile is an i128 of the state.
                tiles: r.u64()? as usize,
            },
            3 => {
                let centers = r.nested()?;
                let n = r.len()?;
                let tiles = (0..n).map(|_| r.u64s()).collect::<Result<_, _>>()?;
                Task::Gather {
                    centers,
                    tiles,
                    tile_rows: r.u64()?,
                }
            }
            _ => return Err(WireError("unknown k-means task")),
        };
        r.end()?;
        let pass = Pass {
            scales: Scales { features, squared },
            task,
        };
        pass.check()?;
        Ok(pass)
    }

    /// Every center list holds whole points of the pass's dimension.
    fn check(&self) -> Result<(), WireError> {
        let d = self.dims();
        let whole = |v: &Vec<Vec<f64>>| d > 0 && v.iter().all(|c| c.len() % d == 0);
        let ok = match &self.task {
            Task::Step { k, centers } => whole(centers) && centers.iter().all(|c| c.len() == k * d),
            Task::Potential {
                centers,
                candidates,
                tile_rows,
                tiles,
            } => {
                whole(centers)
                    && whole(candidates)
                    && centers.len() == candidates.len()
                    && *tile_rows > 0
                    && *tiles <= MAX_TILES
            }
            Task::Gather {
                centers,
                tiles,
                tile_rows,
            } => whole(centers) && centers.len() == tiles.len() && *tile_rows > 0,
        };
        ok.then_some(())
            .ok_or(WireError("k-means task with centers of the wrong size"))
    }
}

/// A malformed pass literal or state: only possible if a plan was edited by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError(&'static str);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for WireError {}

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.bytes(&v.to_le_bytes());
    }
    fn f64s(&mut self, v: &[f64]) {
        self.u64(v.len() as u64);
        for &x in v {
            self.f64(x);
        }
    }
    fn nested(&mut self, v: &[Vec<f64>]) {
        self.u64(v.len() as u64);
        for x in v {
            self.f64s(x);
        }
    }
    fn u64s(&mut self, v: &[u64]) {
        self.u64(v.len() as u64);
        for &x in v {
            self.u64(x);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(WireError("truncated k-means bytes"))?;
        self.0 = rest;
        Ok(*head)
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        self.take::<8>().map(u64::from_le_bytes)
    }
    fn len(&mut self) -> Result<usize, WireError> {
        let n = self.u64()?;
        // A length can never exceed the bytes left; this also bounds allocations.
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.0.len())
            .ok_or(WireError("bad length in k-means bytes"))
    }
    fn f64(&mut self) -> Result<f64, WireError> {
        self.take::<8>().map(f64::from_le_bytes)
    }
    fn f64s(&mut self) -> Result<Vec<f64>, WireError> {
        let n = self.len()?;
        (0..n).map(|_| self.f64()).collect()
    }
    fn nested(&mut self) -> Result<Vec<Vec<f64>>, WireError> {
        let n = self.len()?;
        (0..n).map(|_| self.f64s()).collect()
    }
    fn u64s(&mut self) -> Result<Vec<u64>, WireError> {
        let n = self.len()?;
        (0..n).map(|_| self.u64()).collect()
    }
    fn end(&self) -> Result<(), WireError> {
        self.0
            .is_empty()
            .then_some(())
            .ok_or(WireError("trailing k-means bytes"))
    }
}

/// Mean silhouette of labelled points (`xs` row-major), as scikit-learn's
/// `silhouette_score`: for each point, a = mean distance to the rest of its cluster, b = the
/// lowest mean distance to another cluster, s = (b - a) / max(a, b), and 0 for a point alone
/// in its cluster. O(n^2 d): callers pass a sample.
pub fn silhouette(xs: &[f64], labels: &[usize], k: usize, d: usize) -> f64 {
    use rayon::prelude::*;
    let n = labels.len();
    let mut sizes = vec![0usize; k];
    for &l in labels {
        sizes[l] += 1;
    }
    if n < 2 || sizes.iter().filter(|&&s| s > 0).count() < 2 {
        return f64::NAN;
    }
    let scores: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|i| {
            let xi = &xs[i * d..(i + 1) * d];
            let mut sum = vec![0.0; k];
            for (j, xj) in xs.chunks_exact(d).enumerate() {
                sum[labels[j]] += dist2(xi, xj).sqrt();
            }
            let own = labels[i];
            if sizes[own] < 2 {
                return 0.0;
            }
            let a = sum[own] / (sizes[own] - 1) as f64;
            let b = (0..k)
                .filter(|&c| c != own && sizes[c] > 0)
                .map(|c| sum[c] / sizes[c] as f64)
                .fold(f64::INFINITY, f64::min);
            if a.max(b) > 0.0 {
                (b - a) / a.max(b)
            } else {
                0.0
            }
        })
        .collect();
    scores.iter().sum::<f64>() / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step_pass(centers: Vec<Vec<f64>>, k: usize) -> Pass {
        Pass {
            scales: Scales::for_bounds(&[10.0, 10.0]),
            task: Task::Step { k, centers },
        }
    }

    #[test]
    fn fixed_point_sums_do_not_depend_on_order() {
        let scale = Scales::for_bounds(&[1e6]).features[0];
        let values: Vec<f64> = (0..1000).map(|i| (i as f64 * 0.7311).sin() * 1e6).collect();
        let forward: i128 = values.iter().map(|&v| fixed(v, scale)).sum();
        let backward: i128 = values.iter().rev().map(|&v| fixed(v, scale)).sum();
        assert_eq!(forward, backward);
        let float: f64 = values.iter().sum();
        assert!((unfixed(forward, scale) - float).abs() < 1e-6);
    }

    #[test]
    fn a_step_sums_rows_per_nearest_center_and_merges_in_any_order() {
        let pass = step_pass(vec![vec![0.0, 0.0, 5.0, 5.0]], 2);
        let xs = [0.0, 1.0, 1.0, 0.0, 5.0, 6.0, 4.0, 5.0, 9.0, 9.0];
        let rows: Vec<u64> = (0..5).collect();
        let mut whole = pass.empty_state();
        pass.update(&mut whole, &rows, &xs);
        let (mut a, mut b) = (pass.empty_state(), pass.empty_state());
        pass.update(&mut a, &rows[..2], &xs[..4]);
        pass.update(&mut b, &rows[2..], &xs[4..]);
        b.merge(&a).unwrap();
        assert_eq!(b, whole);
        let s = &pass.scales;
        // counts, then sums of center 0 (1, 1) and center 1 (18, 20), then squared distances.
        assert_eq!(whole.ints[..2], [2, 3]);
        assert_eq!(unfixed(whole.ints[2], s.features[0]), 1.0);
        assert_eq!(unfixed(whole.ints[5], s.features[1]), 20.0);
        assert_eq!(unfixed(whole.ints[6], s.squared), 2.0);
        assert_eq!(unfixed(whole.ints[7], s.squared), 1.0 + 1.0 + 32.0);
        assert_eq!(State::decode(&whole.encode()).unwrap(), whole);
    }

    #[test]
    fn draws_follow_the_weights_and_never_repeat_a_center() {
        // Rows at 0 (the center), 1 and 3: weights 0, 1 and 9, in tiles of two rows. Over
        // many seeds, row 2 is drawn about 90% of the time and row 0 never.
        let xs = [0.0, 0.0, 1.0, 0.0, 3.0, 0.0];
        let rows = [0, 1, 2];
        let scales = Scales::for_bounds(&[3.0, 3.0]);
        let run = |task: Task| {
            let pass = Pass {
                scales: scales.clone(),
                task,
            };
            let mut state = pass.empty_state();
            // In two blocks, merged the other way round, as partitions may be.
            let mut second = pass.empty_state();
            pass.update(&mut state, &rows[..1], &xs[..2]);
            pass.update(&mut second, &rows[1..], &xs[2..]);
            second.merge(&state).unwrap();
            second
        };
        let tiles = run(Task::Potential {
            centers: vec![vec![]],
            candidates: vec![vec![0.0, 0.0]],
            tile_rows: 2,
            tiles: 2,
        })
        .ints;
        assert_eq!(tiles, [weight(1.0, &scales), weight(9.0, &scales)]);
        let gathered = run(Task::Gather {
            centers: vec![vec![0.0, 0.0]],
            tiles: vec![vec![0, 1]],
            tile_rows: 2,
        });
        let mut wins = [0; 3];
        for seed in 0..4000 {
            let t = target(tiles.iter().sum(), draw(seed, 0, 1, 0));
            let (tile, left) = tile_of(&tiles, t);
            let rows = gathered.gathered(0, tile as u64, 2);
            let i = row_in_tile(rows.iter().map(|g| g.weight), left).unwrap();
            wins[rows[i].row as usize] += 1;
        }
        assert_eq!(wins[0], 0);
        assert!((3400..3800).contains(&wins[2]), "{wins:?}");
    }

    #[test]
    fn targets_are_exact_and_below_the_total() {
        // u = 1/2 exactly: half of a total above 2^64, rounded down.
        let total = (3i128 << 64) + 5;
        assert_eq!(target(total, 1 << 63), (3i128 << 63) + 2);
        assert_eq!(target(total, 0), 0);
        assert_eq!(target(1, u64::MAX), 0);
        assert!(target(i128::MAX, u64::MAX) < i128::MAX);
        // The tile, and the row in it, where the running sum first passes the target.
        assert_eq!(tile_of(&[3, 0, 2], 3), (2, 0));
        assert_eq!(tile_of(&[3, 0, 2], 2), (0, 2));
        assert_eq!(row_in_tile([0, 2, 0, 1], 1), Some(1));
        assert_eq!(row_in_tile([0, 2, 0, 1], 2), Some(3));
        assert_eq!(row_in_tile([0, 2, 0, 1], 3), None);
    }

    #[test]
    fn passes_round_trip_and_reject_bad_bytes() {
        for task in [
            Task::Potential {
                centers: vec![vec![1.5], vec![]],
                candidates: vec![vec![0.5, 1.0], vec![2.0]],
                tile_rows: 4096,
                tiles: 3,
            },
            Task::Gather {
                centers: vec![vec![1.5], vec![]],
                tiles: vec![vec![0, 7], vec![2]],
                tile_rows: 4096,
            },
        ] {
            let pass = Pass {
                scales: Scales::for_bounds(&[2.0]),
                task,
            };
            let bytes = pass.encode();
            assert_eq!(Pass::decode(&bytes).unwrap(), pass);
            assert!(Pass::decode(&bytes[..bytes.len() - 1]).is_err());
        }
        let bad = step_pass(vec![vec![1.0; 3]], 2).encode();
        assert!(Pass::decode(&bad).is_err());
        let state = State {
            ints: vec![1, -2],
            rows: vec![Gathered {
                run: 1,
                row: 9,
                weight: 1 << 70,
                x: vec![0.25, -1.0],
            }],
        };
        assert_eq!(State::decode(&state.encode()).unwrap(), state);
    }

    #[test]
    fn silhouette_matches_a_hand_computed_case() {
        // Two clusters on a line: {0, 1} and {5}. Point 0: a = 1, b = 5 -> 0.8;
        // point 1: a = 1, b = 4 -> 0.75; point 5 is alone -> 0. Mean 0.5166...
        let s = silhouette(&[0.0, 1.0, 5.0], &[0, 0, 1], 2, 1);
        assert!((s - (0.8 + 0.75) / 3.0).abs() < 1e-12);
    }
}
