//! Pareto fronts and exact hypervolume. Every point here is minimised in each coordinate
//! (callers negate maximised objectives first).
//!
//! Two objectives use a sort-and-sweep in O(n log n). Three or more use dimension sweep
//! slicing (the HSO idea of While et al., "A faster algorithm for calculating hypervolume",
//! IEEE TEC 2006): sort by the last coordinate and sum slab thickness times the hypervolume of
//! the points below the slab in one dimension fewer. That is exponential in the dimension but
//! exact, and search fronts hold tens to a few hundred points.

/// Returns whether `a` Pareto-dominates `b`, being no worse in every coordinate and better in one.
pub fn dominates(a: &[f64], b: &[f64]) -> bool {
    let mut strictly_better = false;
    for (x, y) in a.iter().zip(b) {
        if x > y {
            return false;
        }
        if x < y {
            strictly_better = true;
        }
    }
    strictly_better
}

/// Indices of the non-dominated points, in input order. Points equal to each other are all
/// kept, because neither dominates the other.
pub fn front_indices(points: &[Vec<f64>]) -> Vec<usize> {
    (0..points.len())
        .filter(|&i| !points.iter().any(|q| dominates(q, &points[i])))
        .collect()
}

/// Non-dominated sorting: rank 0 is the Pareto front, rank 1 the front of the rest, and so
/// on. Returns the rank of each point. O(n² · ranks), fine for populations of hundreds.
pub fn pareto_ranks(points: &[Vec<f64>]) -> Vec<usize> {
    let n = points.len();
    let mut rank = vec![usize::MAX; n];
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut current = 0;
    while !remaining.is_empty() {
        let front: Vec<usize> = remaining
            .iter()
            .copied()
            .filter(|&i| !remaining.iter().any(|&j| dominates(&points[j], &points[i])))
            .collect();
        for &i in &front {
            rank[i] = current;
        }
        remaining.retain(|i| rank[*i] == usize::MAX);
        current += 1;
    }
    rank
}

/// Exact hypervolume dominated by `points` and bounded by `reference`. Points that do not
/// dominate the reference point in every coordinate add nothing.
pub fn hypervolume(points: &[Vec<f64>], reference: &[f64]) -> f64 {
    let inside: Vec<&[f64]> = points
        .iter()
        .filter(|p| p.len() == reference.len() && p.iter().zip(reference).all(|(x, r)| x < r))
        .map(|p| p.as_slice())
        .collect();
    hypervolume_of(inside, reference)
}

fn hypervolume_of(mut points: Vec<&[f64]>, reference: &[f64]) -> f64 {
    let d = reference.len();
    if points.is_empty() || d == 0 {
        return 0.0;
    }
    match d {
        1 => reference[0] - points.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min),
        2 => hypervolume_2d(&mut points, reference),
        _ => {
            // Slabs along the last coordinate: between consecutive distinct values z_i and
            // z_{i+1} (or the reference), the cross-section is the (d-1)-dimensional
            // hypervolume of all points with last coordinate <= z_i.
            points.sort_by(|a, b| a[d - 1].total_cmp(&b[d - 1]));
            let mut volume = 0.0;
            let mut i = 0;
            while i < points.len() {
                let z = points[i][d - 1];
                let mut j = i;
                while j < points.len() && points[j][d - 1] == z {
                    j += 1;
                }
                let upper = if j < points.len() { points[j][d - 1] } else { reference[d - 1] };
                let below: Vec<&[f64]> = points[..j].iter().map(|p| &p[..d - 1]).collect();
                let section = hypervolume_of(below, &reference[..d - 1]);
                volume += section * (upper - z);
                i = j;
            }
            volume
        }
    }
}

fn hypervolume_2d(points: &mut [&[f64]], reference: &[f64]) -> f64 {
    points.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    let mut volume = 0.0;
    let mut best_y = reference[1];
    for p in points.iter() {
        if p[1] < best_y {
            volume += (reference[0] - p[0]) * (best_y - p[1]);
            best_y = p[1];
        }
    }
    volume
}

/// Hypervolume gained by adding `point` to `front`, whose own hypervolume is `front_volume`.
pub fn hypervolume_improvement(
    front: &[Vec<f64>],
    front_volume: f64,
    point: &[f64],
    reference: &[f64],
) -> f64 {
    if !point.iter().zip(reference).all(|(x, r)| x < r) {
        return 0.0;
    }
    if front.iter().any(|q| q.iter().zip(point).all(|(a, b)| a <= b)) {
        return 0.0;
    }
    let mut extended: Vec<Vec<f64>> = front.iter().filter(|q| !dominates(point, q)).cloned().collect();
    extended.push(point.to_vec());
    (hypervolume(&extended, reference) - front_volume).max(0.0)
}

/// Hypervolume gained by adding the 2-objective `point` to `front`, which must be mutually
/// non-dominated and sorted by ascending first coordinate. Runs in O(front) without
/// allocating, for the reward of every scored leaf.
pub fn hypervolume_improvement_2d(front: &[Vec<f64>], point: &[f64], reference: &[f64]) -> f64 {
    let (px, py) = (point[0], point[1]);
    let (rx, ry) = (reference[0], reference[1]);
    if px >= rx || py >= ry {
        return 0.0;
    }
    // Sweep x from px to rx. `height` is the lowest y the front reaches at or left of x
    // (capped at the reference), so the strip above py and below `height` is gained.
    let mut height = ry;
    let mut x = px;
    let mut gained = 0.0;
    for q in front {
        if q[0] <= px {
            height = height.min(q[1]);
            continue;
        }
        if q[0] >= rx {
            break;
        }
        gained += (q[0] - x) * (height - py).max(0.0);
        x = q[0];
        height = height.min(q[1]);
    }
    gained + (rx - x) * (height - py).max(0.0)
}

/// How far `point` must improve, in every coordinate at once, to leave the region dominated
/// by `front` (the additive epsilon distance). Zero when no front point weakly dominates it.
pub fn dominated_distance(front: &[Vec<f64>], point: &[f64]) -> f64 {
    front
        .iter()
        .filter(|q| q.iter().zip(point).all(|(a, b)| a <= b))
        .map(|q| q.iter().zip(point).map(|(a, b)| b - a).fold(f64::INFINITY, f64::min))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Exact hypervolume by cutting space into the grid of all point coordinates and adding
    /// the cells whose lower corner some point weakly dominates.
    fn brute_force(points: &[Vec<f64>], reference: &[f64]) -> f64 {
        let d = reference.len();
        let axes: Vec<Vec<f64>> = (0..d)
            .map(|k| {
                let mut v: Vec<f64> =
                    points.iter().map(|p| p[k]).filter(|&x| x < reference[k]).collect();
                v.push(reference[k]);
                v.sort_by(f64::total_cmp);
                v.dedup();
                v
            })
            .collect();
        let inside: Vec<&Vec<f64>> =
            points.iter().filter(|p| p.iter().zip(reference).all(|(x, r)| x < r)).collect();
        let mut total = 0.0;
        let mut index = vec![0usize; d];
        loop {
            if (0..d).all(|k| index[k] + 1 < axes[k].len()) {
                let corner: Vec<f64> = (0..d).map(|k| axes[k][index[k]]).collect();
                if inside.iter().any(|p| p.iter().zip(&corner).all(|(x, c)| x <= c)) {
                    total += (0..d).map(|k| axes[k][index[k] + 1] - axes[k][index[k]]).product::<f64>();
                }
            }
            let mut k = 0;
            loop {
                if k == d {
                    return total;
                }
                index[k] += 1;
                if index[k] < axes[k].len() {
                    break;
                }
                index[k] = 0;
                k += 1;
            }
        }
    }

    fn random_points(rng: &mut rand::rngs::StdRng, n: usize, d: usize, grid: bool) -> Vec<Vec<f64>> {
        (0..n)
            .map(|_| {
                (0..d)
                    .map(|_| if grid { rng.random_range(0..5) as f64 } else { rng.random::<f64>() })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn dominance_cases() {
        assert!(dominates(&[1.0, 2.0], &[1.0, 3.0]));
        assert!(!dominates(&[1.0, 2.0], &[1.0, 2.0]));
        assert!(!dominates(&[0.0, 3.0], &[1.0, 2.0]));
    }

    #[test]
    fn front_and_ranks() {
        let points = vec![vec![1.0, 4.0], vec![2.0, 2.0], vec![3.0, 3.0], vec![4.0, 1.0], vec![5.0, 5.0]];
        assert_eq!(front_indices(&points), vec![0, 1, 3]);
        assert_eq!(pareto_ranks(&points), vec![0, 0, 1, 0, 2]);
    }

    #[test]
    fn hypervolume_2d_by_hand() {
        let points = vec![vec![1.0, 3.0], vec![2.0, 2.0], vec![3.0, 1.0]];
        // Staircase under reference (4, 4), summed as columns of widths 1: heights 1, 2 and 3.
        assert_eq!(hypervolume(&points, &[4.0, 4.0]), 3.0 + 2.0 + 1.0);
        assert_eq!(hypervolume(&[vec![5.0, 0.0]], &[4.0, 4.0]), 0.0);
    }

    #[test]
    fn hypervolume_matches_brute_force() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for d in 1..=5 {
            for trial in 0..40 {
                let n = 1 + trial % 12;
                let grid = trial % 2 == 0;
                let points = random_points(&mut rng, n, d, grid);
                let reference = vec![if grid { 4.5 } else { 0.9 }; d];
                let fast = hypervolume(&points, &reference);
                let slow = brute_force(&points, &reference);
                assert!((fast - slow).abs() <= 1e-9 * slow.max(1.0), "d={d} n={n}: {fast} vs {slow}");
            }
        }
    }

    #[test]
    fn improvement_matches_difference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for d in 2..=4 {
            for _ in 0..30 {
                let points = random_points(&mut rng, 8, d, false);
                let front: Vec<Vec<f64>> = front_indices(&points).into_iter().map(|i| points[i].clone()).collect();
                let reference = vec![1.0; d];
                let volume = hypervolume(&front, &reference);
                let p: Vec<f64> = (0..d).map(|_| rng.random::<f64>()).collect();
                let mut with_p = front.clone();
                with_p.push(p.clone());
                let expected = brute_force(&with_p, &reference) - volume;
                let got = hypervolume_improvement(&front, volume, &p, &reference);
                assert!((got - expected).abs() < 1e-9, "{got} vs {expected}");
            }
        }
    }

    #[test]
    fn improvement_2d_matches_general() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..200 {
            let points = random_points(&mut rng, 10, 2, false);
            let mut front: Vec<Vec<f64>> = front_indices(&points).into_iter().map(|i| points[i].clone()).collect();
            front.sort_by(|a, b| a[0].total_cmp(&b[0]));
            let reference = [0.95, 0.9];
            let volume = hypervolume(&front, &reference);
            let p = [rng.random::<f64>(), rng.random::<f64>()];
            let general = hypervolume_improvement(&front, volume, &p, &reference);
            let fast = hypervolume_improvement_2d(&front, &p, &reference);
            assert!((general - fast).abs() < 1e-12, "{general} vs {fast}");
        }
    }

    #[test]
    fn dominated_distance_cases() {
        let front = vec![vec![1.0, 3.0], vec![3.0, 1.0]];
        assert_eq!(dominated_distance(&front, &[0.5, 5.0]), 0.0);
        assert_eq!(dominated_distance(&front, &[2.0, 5.0]), 1.0);
        assert_eq!(dominated_distance(&front, &[4.0, 4.0]), 1.0);
        assert_eq!(dominated_distance(&front, &[5.0, 6.0]), 3.0);
    }
}
