//! The arithmetic of k-means: distances, the work of one pass over a block of rows, and the
//! state that passes merge.
//!
//! Determinism is the design constraint. A pass over the data is a DataFusion aggregate, so its
//! rows arrive in batches and partitions whose boundaries and merge order depend on the number
//! of threads. Floating-point sums depend on that order; segflow's must not. So every sum a pass
//! keeps is exact: each value is converted to a fixed-point integer on a power-of-two grid
//! chosen from the feature's largest magnitude ([`Scales`]), and the integers are added as
//! `i128`. Integer addition is associative, so partitions may merge in any order and the sum is
//! the same bit for bit. Random draws are a hash of (seed, run, step, candidate, row id), not a
//! stream, so they too are the same whatever order rows come in.

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

/// A uniform draw in (0, 1) that depends only on its inputs.
#[inline]
pub fn uniform(seed: u64, run: u64, step: u64, candidate: u64, row: u64) -> f64 {
    uniform_at(draw_prefix(seed, run, step, candidate), row)
}

/// The part of [`uniform`] that does not depend on the row: a pass draws for every row with
/// the same few of these, so it hashes them once, not once per row.
#[inline]
pub fn draw_prefix(seed: u64, run: u64, step: u64, candidate: u64) -> u64 {
    let h = splitmix(seed ^ splitmix(run.wrapping_add(0x9e37_79b9)));
    splitmix(h ^ step.rotate_left(17) ^ candidate.rotate_left(41))
}

/// [`uniform`] for a row, from its [`draw_prefix`].
#[inline]
pub fn uniform_at(prefix: u64, row: u64) -> f64 {
    let h = splitmix(prefix ^ row);
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
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
    /// k-means++ draws: per run, `candidates` independent rows, each drawn with probability
    /// proportional to its squared distance to the run's centers so far (uniformly when it has
    /// none). A weighted draw is the row with the largest `ln(u) / w` (Efraimidis-Spirakis), a
    /// maximum, so partitions merge in any order.
    Sample {
        seed: u64,
        step: u64,
        candidates: usize,
        runs: Vec<u64>,
        centers: Vec<Vec<f64>>,
    },
    /// The potential (sum of squared distances to the nearest center) each candidate would
    /// leave if added to its run's centers: greedy k-means++ keeps the best candidate.
    Potential {
        centers: Vec<Vec<f64>>,
        candidates: Vec<Vec<f64>>,
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

    /// An empty state of the right shape.
    pub fn empty_state(&self) -> State {
        let d = self.dims();
        match &self.task {
            Task::Step { k, centers } => State {
                ints: vec![0; centers.len() * step_stride(*k, d)],
                slots: Vec::new(),
            },
            Task::Sample {
                candidates, runs, ..
            } => State {
                ints: Vec::new(),
                slots: vec![Slot::empty(d); runs.len() * candidates],
            },
            Task::Potential { candidates, .. } => State {
                ints: vec![0; candidates.iter().map(|c| c.len() / d).sum()],
                slots: Vec::new(),
            },
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
            Task::Sample {
                seed,
                step,
                candidates,
                runs,
                centers,
            } => {
                let prefixes: Vec<u64> = runs
                    .iter()
                    .flat_map(|&run| {
                        (0..*candidates).map(move |j| draw_prefix(*seed, run, *step, j as u64))
                    })
                    .collect();
                for (x, &row) in xs.chunks_exact(d).zip(rows) {
                    for (r, c) in centers.iter().enumerate() {
                        let w = if c.is_empty() {
                            1.0
                        } else {
                            nearest_d::<D>(x, c, d).1
                        };
                        if w <= 0.0 {
                            continue; // already a center: never drawn again
                        }
                        for j in 0..*candidates {
                            let slot = &mut state.slots[r * candidates + j];
                            slot.offer(uniform_at(prefixes[r * candidates + j], row), w, row, x);
                        }
                    }
                }
            }
            Task::Potential {
                centers,
                candidates,
            } => {
                for x in xs.chunks_exact(d) {
                    let mut at = 0;
                    for (c, cands) in centers.iter().zip(candidates) {
                        let current = nearest_d::<D>(x, c, d).1;
                        for cand in cands.chunks_exact(d) {
                            let dd = dist2_d::<D>(x, cand, d).min(current);
                            state.ints[at] += fixed(dd, scales.squared);
                            at += 1;
                        }
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

/// What a pass has accumulated: exact integer sums and drawn rows. Merging is addition and a
/// maximum, both independent of order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct State {
    pub ints: Vec<i128>,
    pub slots: Vec<Slot>,
}

/// One weighted draw: the best key so far and its row.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub key: f64,
    pub row: u64,
    pub x: Vec<f64>,
}

impl Slot {
    pub(super) fn empty(d: usize) -> Slot {
        Slot {
            key: f64::NEG_INFINITY,
            row: u64::MAX,
            x: vec![0.0; d],
        }
    }

    /// Whether a row with `key` replaces this draw: a larger key, or the same key and a lower
    /// row id.
    fn beats(&self, key: f64, row: u64) -> bool {
        key > self.key || (key == self.key && row < self.row)
    }

    /// Offers row `row` (features `x`, weight `w > 0`, uniform draw `u`) to this draw: it
    /// wins with key `ln(u) / w`.
    #[inline]
    pub(super) fn offer(&mut self, u: f64, w: f64, row: u64, x: &[f64]) {
        // ln(u) <= u - 1, so a row whose bound cannot reach the best key so far skips the
        // logarithm; the result is the same.
        if (u - 1.0) / w < self.key {
            return;
        }
        let key = u.ln() / w;
        if self.beats(key, row) {
            self.key = key;
            self.row = row;
            self.x.copy_from_slice(x);
        }
    }

    /// Keeps the better of this draw and `other` (a maximum: any order of merges agrees).
    pub(super) fn merge(&mut self, other: &Slot) {
        if self.beats(other.key, other.row) {
            self.clone_from(other);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.row == u64::MAX
    }
}

impl State {
    pub fn merge(&mut self, other: &State) -> Result<(), WireError> {
        if self.ints.len() != other.ints.len() || self.slots.len() != other.slots.len() {
            return Err(WireError("k-means states of different shapes"));
        }
        for (a, b) in self.ints.iter_mut().zip(&other.ints) {
            *a += b;
        }
        for (a, b) in self.slots.iter_mut().zip(&other.slots) {
            a.merge(b);
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u64(self.ints.len() as u64);
        for &v in &self.ints {
            w.bytes(&v.to_le_bytes());
        }
        w.u64(self.slots.len() as u64);
        for s in &self.slots {
            w.f64(s.key);
            w.u64(s.row);
            w.f64s(&s.x);
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
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            slots.push(Slot {
                key: r.f64()?,
                row: r.u64()?,
                x: r.f64s()?,
            });
        }
        r.end()?;
        Ok(State { ints, slots })
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
            Task::Sample {
                seed,
                step,
                candidates,
                runs,
                centers,
            } => {
                w.u64(1);
                w.u64(*seed);
                w.u64(*step);
                w.u64(*candidates as u64);
                w.u64(runs.len() as u64);
                for &r in runs {
                    w.u64(r);
                }
                w.nested(centers);
            }
            Task::Potential {
                centers,
                candidates,
            } => {
                w.u64(2);
                w.nested(centers);
                w.nested(candidates);
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
            1 => {
                let seed = r.u64()?;
                let step = r.u64()?;
                let candidates = r.len()?;
                let n = r.len()?;
                let runs = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
                Task::Sample {
                    seed,
                    step,
                    candidates,
                    runs,
                    centers: r.nested()?,
                }
            }
            2 => Task::Potential {
                centers: r.nested()?,
                candidates: r.nested()?,
            },
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
            Task::Sample { runs, centers, .. } => whole(centers) && runs.len() == centers.len(),
            Task::Potential {
                centers,
                candidates,
            } => whole(centers) && whole(candidates) && centers.len() == candidates.len(),
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
        // Rows at 0 (a center), 1 and 3: weights 0, 1, 9. Over many seeds, row 2 wins ~90%.
        let xs = [0.0, 0.0, 1.0, 0.0, 3.0, 0.0];
        let rows = [0, 1, 2];
        let mut wins = [0; 3];
        for seed in 0..4000 {
            let pass = Pass {
                scales: Scales::for_bounds(&[3.0, 3.0]),
                task: Task::Sample {
                    seed,
                    step: 1,
                    candidates: 1,
                    runs: vec![0],
                    centers: vec![vec![0.0, 0.0]],
                },
            };
            let mut state = pass.empty_state();
            pass.update(&mut state, &rows, &xs);
            wins[state.slots[0].row as usize] += 1;
        }
        assert_eq!(wins[0], 0);
        assert!((3400..3800).contains(&wins[2]), "{wins:?}");
    }

    #[test]
    fn passes_round_trip_and_reject_bad_bytes() {
        let pass = Pass {
            scales: Scales::for_bounds(&[2.0]),
            task: Task::Sample {
                seed: 7,
                step: 2,
                candidates: 3,
                runs: vec![4, 5],
                centers: vec![vec![1.5], vec![]],
            },
        };
        let bytes = pass.encode();
        assert_eq!(Pass::decode(&bytes).unwrap(), pass);
        assert!(Pass::decode(&bytes[..bytes.len() - 1]).is_err());
        let bad = step_pass(vec![vec![1.0; 3]], 2).encode();
        assert!(Pass::decode(&bad).is_err());
    }

    #[test]
    fn silhouette_matches_a_hand_computed_case() {
        // Two clusters on a line: {0, 1} and {5}. Point 0: a = 1, b = 5 -> 0.8;
        // point 1: a = 1, b = 4 -> 0.75; point 5 is alone -> 0. Mean 0.5166...
        let s = silhouette(&[0.0, 1.0, 5.0], &[0, 0, 1], 2, 1);
        assert!((s - (0.8 + 0.75) / 3.0).abs() < 1e-12);
    }
}
