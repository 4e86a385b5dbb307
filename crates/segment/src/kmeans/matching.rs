//! Keeping cluster ids stable from run to run: this run's centers are matched one to one to the
//! previous run's (carried into this run's feature space) so that the total squared distance
//! between matched centers is smallest, and each takes its match's id.

use super::kernel::dist2;

/// Ids for `new` centers (`k * d`, row-major, in size order) given the previous run's
/// `(id, center)` pairs in the same space. Matched centers take the previous id; the others take
/// the smallest ids no previous cluster had (an id that disappears is never given to an
/// unrelated cluster), in size order. Without previous centers: 0, 1, 2, ...
pub fn ids(new: &[f64], previous: &[(i32, Vec<f64>)], d: usize) -> Vec<i32> {
    let k = new.len() / d;
    let mut matched: Vec<Option<i32>> = vec![None; k];
    if !previous.is_empty() {
        let cost: Vec<Vec<f64>> = new
            .chunks_exact(d)
            .map(|c| previous.iter().map(|(_, p)| dist2(c, p)).collect())
            .collect();
        for (i, p) in assignment(&cost).into_iter().enumerate() {
            matched[i] = p.map(|p| previous[p].0);
        }
    }
    let mut next = 0;
    matched
        .into_iter()
        .map(|id| {
            id.unwrap_or_else(|| {
                while previous.iter().any(|(p, _)| *p == next) {
                    next += 1;
                }
                next += 1;
                next - 1
            })
        })
        .collect()
}

/// The minimum-cost one-to-one assignment of rows to columns (Hungarian algorithm, O(n^3)):
/// for each row, its column, or None when there are more rows than columns and it got none.
pub fn assignment(cost: &[Vec<f64>]) -> Vec<Option<usize>> {
    let rows = cost.len();
    let cols = cost.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return vec![None; rows];
    }
    if rows > cols {
        // Solve the transpose, where every (former) column gets a row.
        let t: Vec<Vec<f64>> = (0..cols)
            .map(|j| (0..rows).map(|i| cost[i][j]).collect())
            .collect();
        let mut out = vec![None; rows];
        for (j, i) in hungarian(&t).into_iter().enumerate() {
            out[i] = Some(j);
        }
        return out;
    }
    hungarian(cost).into_iter().map(Some).collect()
}

/// Rows <= columns; every row gets a distinct column.
fn hungarian(a: &[Vec<f64>]) -> Vec<usize> {
    let (n, m) = (a.len(), a[0].len());
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = a[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut out = vec![0; n];
    for j in 1..=m {
        if p[j] != 0 {
            out[p[j] - 1] = j - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_is_optimal_not_greedy() {
        // Greedy would pair row 0 with column 0 (cost 1) and leave row 1 with cost 100.
        let cost = vec![vec![1.0, 2.0], vec![3.0, 100.0]];
        assert_eq!(assignment(&cost), [Some(1), Some(0)]);
        // More rows than columns: the cheapest rows get the columns.
        let cost = vec![vec![5.0], vec![1.0], vec![3.0]];
        assert_eq!(assignment(&cost), [None, Some(0), None]);
    }

    #[test]
    fn ids_follow_the_nearest_previous_center() {
        // Previous: id 7 at 0, id 2 at 10, id 0 at 20. New (size order): near 19, near 1, 9.5.
        let previous = vec![(7, vec![0.0]), (2, vec![10.0]), (0, vec![20.0])];
        assert_eq!(ids(&[19.0, 1.0, 9.5], &previous, 1), [0, 7, 2]);
        // One more cluster than before: it takes the smallest id no previous cluster had.
        assert_eq!(ids(&[19.0, 1.0, 9.5, 30.0], &previous, 1), [0, 7, 2, 1]);
        // One fewer: the unmatched previous id is simply gone.
        assert_eq!(ids(&[19.0, 1.0], &previous, 1), [0, 7]);
        assert_eq!(ids(&[5.0, 6.0], &[], 1), [0, 1]);
    }
}
