//! CPU embedding lookup and residual add.
//!
//! `table` is `[vocab, d]` row-major and the output is `[ids.len(), d]`. A token id at or
//! beyond `vocab` is user input, so both lookups return an error that names it instead of
//! panicking. The residual add is `a += b` element-wise.

use rayon::prelude::*;

use crate::{Error, Result};

/// Below this many elements the copy and the add run on the calling thread.
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// Chunk of elements one rayon task handles in the residual add.
const PARALLEL_CHUNK: usize = 1 << 14;

/// Returns an error naming the first id that is outside a vocabulary of `vocab` entries.
pub fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().position(|&id| id as usize >= vocab) {
        Some(position) => Err(Error::Invalid(format!(
            "token id {} at position {position} is out of range for a vocabulary of {vocab}; use ids below {vocab}",
            ids[position]
        ))),
        None => Ok(()),
    }
}

fn vocab_of(table: &[f32], d: usize) -> usize {
    assert!(d > 0, "embedding: d must be positive");
    assert_eq!(table.len() % d, 0, "embedding: table has {} elements, not a multiple of d = {d}", table.len());
    table.len() / d
}

/// Gathers the rows of `table` named by `ids`: the plain reference.
///
/// # Errors
/// [`Error::Invalid`] when an id is at or beyond the table's row count.
///
/// # Panics
/// When `d` is 0 or does not divide `table.len()`.
pub fn embedding_ref(table: &[f32], ids: &[u32], d: usize) -> Result<Vec<f32>> {
    let vocab = vocab_of(table, d);
    check_ids(ids, vocab)?;
    let mut out = Vec::with_capacity(ids.len() * d);
    for &id in ids {
        let id = id as usize;
        out.extend_from_slice(&table[id * d..(id + 1) * d]);
    }
    Ok(out)
}

/// Writes the rows of `table` named by `ids` into `out` (`[ids.len(), d]`).
///
/// # Errors
/// [`Error::Invalid`] when an id is at or beyond the table's row count; `out` is then
/// left unchanged.
///
/// # Panics
/// When `d` is 0, does not divide `table.len()`, or `out` is not `ids.len()·d` long.
pub fn embedding(out: &mut [f32], table: &[f32], ids: &[u32], d: usize) -> Result<()> {
    let vocab = vocab_of(table, d);
    assert_eq!(out.len(), ids.len() * d, "embedding: out has {} elements, expected ids·d = {}·{d}", out.len(), ids.len());
    check_ids(ids, vocab)?;
    let copy_row = |(row, &id): (&mut [f32], &u32)| {
        let id = id as usize;
        row.copy_from_slice(&table[id * d..(id + 1) * d]);
    };
    if out.len() >= PARALLEL_MIN_ELEMENTS && ids.len() > 1 {
        out.par_chunks_mut(d).zip(ids.par_iter()).for_each(copy_row);
    } else {
        out.chunks_mut(d).zip(ids.iter()).for_each(copy_row);
    }
    Ok(())
}

/// Returns `a + b` element-wise: the plain reference.
///
/// # Panics
/// When `a` and `b` differ in length.
pub fn residual_add_ref(a: &[f32], b: &[f32]) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "residual_add: a has {} elements but b has {}", a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Adds `b` to `a` in place.
///
/// # Panics
/// When `a` and `b` differ in length.
pub fn residual_add(a: &mut [f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "residual_add: a has {} elements but b has {}", a.len(), b.len());
    let add = |(a, b): (&mut [f32], &[f32])| {
        for (x, y) in a.iter_mut().zip(b) {
            *x += y;
        }
    };
    if a.len() >= PARALLEL_MIN_ELEMENTS {
        a.par_chunks_mut(PARALLEL_CHUNK).zip(b.par_chunks(PARALLEL_CHUNK)).for_each(add);
    } else {
        add((a, b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::random_vec;

    #[test]
    fn ref_gathers_rows() {
        let table = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        assert_eq!(embedding_ref(&table, &[2, 0, 2], 2).unwrap(), vec![20.0, 21.0, 0.0, 1.0, 20.0, 21.0]);
        assert_eq!(embedding_ref(&table, &[], 2).unwrap(), Vec::<f32>::new());
    }

    #[test]
    fn out_of_range_id_is_error() {
        let table = [0.0; 6];
        let err = embedding_ref(&table, &[1, 3], 2).unwrap_err().to_string();
        assert!(err.contains("token id 3 at position 1"), "{err}");
        assert!(err.contains("vocabulary of 3"), "{err}");

        let mut out = vec![-1.0; 4];
        assert!(embedding(&mut out, &table, &[0, 3], 2).is_err());
        assert_eq!(out, vec![-1.0; 4], "a failed lookup must leave out unchanged");
    }

    #[test]
    fn fast_matches_ref() {
        for &(vocab, d, n) in &[(1usize, 1usize, 1usize), (7, 33, 67), (130, 67, 7), (50, 1000, 130)] {
            let table = random_vec(vocab * d, 1e4, (vocab + d) as u64);
            let ids: Vec<u32> = (0..n).map(|i| (i * 31 % vocab) as u32).collect();
            let want = embedding_ref(&table, &ids, d).unwrap();
            let mut got = vec![0.0; n * d];
            embedding(&mut got, &table, &ids, d).unwrap();
            assert_eq!(got, want, "vocab={vocab} d={d} n={n}");
        }
    }

    #[test]
    fn residual_add_matches_ref() {
        for &len in &[1usize, 7, 130, 100_000] {
            let a = random_vec(len, 1e4, len as u64);
            let b = random_vec(len, 1.0, len as u64 + 1);
            let want = residual_add_ref(&a, &b);
            let mut got = a.clone();
            residual_add(&mut got, &b);
            assert_eq!(got, want, "len={len}");
        }
    }
}
