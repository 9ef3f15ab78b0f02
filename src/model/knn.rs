//! Neighbour selection and max aggregation of the Grapher (MRConv) for inference:
//! `max_{j ∈ kNN(i)} y_j` for every node i, from a distance matrix.
//!
//! [`knn_max`] runs a native CPU kernel that selects the k nearest keys of each node
//! and takes the elementwise maximum of their features in one pass, without
//! materialising the (B, N, k, C) tensor of gathered neighbours that
//! `topk` + `index_select` + `amax` needs. On other devices it runs those torch ops.
//! Neither supports autograd; training uses `vig::Grapher`.

use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use super::vig::neighbour_rows;

/// For every row i of `dist` (B, N, M): the `k·dilation` smallest entries in ascending
/// order, every `dilation`-th of them kept (ViG's dilated k-NN), and the elementwise
/// maximum of the selected rows of `keys` (B, M, C). Returns (B, N, C) float32.
///
/// `dist` and `keys` must be float32 on the same device. The CPU kernel and the torch
/// fallback select the same neighbours (ties go to the lower key index in the kernel).
pub fn knn_max(dist: &Tensor, keys: &Tensor, k: i64, dilation: i64) -> Tensor {
    let cpu_f32 = dist.device() == Device::Cpu
        && keys.device() == Device::Cpu
        && dist.kind() == Kind::Float
        && keys.kind() == Kind::Float;
    let (_, _, m) = dist.size3().unwrap_or((0, 0, 0));
    if cpu_f32 && dist.numel() > 0 && keys.numel() > 0 && k >= 1 && dilation >= 1 && m >= 1 {
        knn_max_cpu(dist, keys, k, dilation)
    } else {
        knn_max_torch(dist, keys, k, dilation)
    }
}

/// [`knn_max`] with torch ops (`topk`, `index_select`, `amax`), on any device.
pub fn knn_max_torch(dist: &Tensor, keys: &Tensor, k: i64, dilation: i64) -> Tensor {
    let m = dist.size().last().copied().unwrap_or(0);
    let kd = (k * dilation).min(m);
    let (_, idx) = dist.topk(kd, -1, false, true);
    let idx = idx.slice(2, 0, kd, dilation);
    neighbour_rows(keys, &idx).amax([2], false)
}

/// Rows handed to one rayon task at least (a row costs well under a microsecond).
const MIN_ROWS_PER_TASK: usize = 64;

fn knn_max_cpu(dist: &Tensor, keys: &Tensor, k: i64, dilation: i64) -> Tensor {
    let dist = dist.contiguous();
    let keys = keys.contiguous();
    let (b, n, m) = dist.size3().unwrap_or((0, 0, 0));
    let c = keys.size().last().copied().unwrap_or(0);
    assert_eq!(keys.size(), [b, m, c], "knn_max: keys must be (B, M, C) with M from dist (B, N, M)");
    let (n, m, c) = (n as usize, m as usize, c as usize);
    let kd = (k * dilation) as usize;
    let kd = kd.min(m);
    let step = dilation as usize;
    let out = Tensor::empty([b, n as i64, c as i64], (Kind::Float, Device::Cpu));
    // SAFETY: `dist`, `keys` and `out` are contiguous float32 CPU tensors with non-zero numel
    // (checked by the caller), so their data pointers are valid and aligned for exactly
    // `numel` f32 values. They stay alive until the end of this function, `out` was just
    // allocated (no other reference to its storage exists), and nothing else reads or
    // writes these storages while the slices live.
    let (d, kv, o) = unsafe {
        (
            std::slice::from_raw_parts(dist.data_ptr() as *const f32, dist.numel()),
            std::slice::from_raw_parts(keys.data_ptr() as *const f32, keys.numel()),
            std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, out.numel()),
        )
    };
    o.par_chunks_mut(c).zip(d.par_chunks(m)).with_min_len(MIN_ROWS_PER_TASK).enumerate().for_each_init(
        || (vec![0f32; kd], vec![0usize; kd], Scratch::new(kd, m)),
        |(vals, idx, scratch), (row, (out_row, dist_row))| {
            select_smallest(dist_row, vals, idx, scratch);
            let batch_keys = &kv[(row / n) * m * c..][..m * c];
            let first = &batch_keys[idx[0] * c..][..c];
            out_row.copy_from_slice(first);
            for &j in idx.iter().step_by(step).skip(1) {
                let key = &batch_keys[j * c..][..c];
                for (o, &v) in out_row.iter_mut().zip(key) {
                    // Not f32::max: this form compiles to one vector max instruction.
                    *o = if v > *o { v } else { *o };
                }
            }
        },
    );
    out
}

/// Fills `vals`/`idx` (both of length kd ≤ row.len()) with the kd smallest entries of `row`
/// and their positions, ascending; among equal values the lower position comes first.
///
/// The minima of kd disjoint classes of entries (positions j ≡ g mod kd) are kd entries, so
/// their maximum τ bounds the kd-th smallest from above: only entries ≤ τ (typically 2–3·kd
/// of them) go through the insertion step.
fn select_smallest(row: &[f32], vals: &mut [f32], idx: &mut [usize], scratch: &mut Scratch) {
    let kd = vals.len();
    let Scratch { class_min, candidates } = scratch;
    class_min.fill(f32::INFINITY);
    for chunk in row.chunks(kd) {
        for (m, &v) in class_min.iter_mut().zip(chunk) {
            *m = if v < *m { v } else { *m };
        }
    }
    let tau = class_min.iter().fold(f32::NEG_INFINITY, |t, &m| if m > t { m } else { t });
    // Branch-free: write every position, advance only past candidates.
    let mut count = 0;
    for (j, &v) in row.iter().enumerate() {
        candidates[count] = j;
        count += usize::from(v <= tau);
    }
    let mut filled = 0;
    for &j in &candidates[..count] {
        let v = row[j];
        if filled < kd {
            insert_sorted(vals, idx, filled, v, j);
            filled += 1;
        } else if v < vals[kd - 1] {
            insert_sorted(vals, idx, kd - 1, v, j);
        }
    }
    if filled < kd {
        // Only with NaNs in the row: every entry, NaNs last.
        select_smallest_plain(row, vals, idx);
    }
}

/// Per-thread buffers of [`select_smallest`]: kd class minima, M candidate positions.
struct Scratch {
    class_min: Vec<f32>,
    candidates: Vec<usize>,
}

impl Scratch {
    fn new(kd: usize, m: usize) -> Self {
        Scratch { class_min: vec![0.0; kd], candidates: vec![0; m] }
    }
}

/// [`select_smallest`] by insertion over the whole row.
fn select_smallest_plain(row: &[f32], vals: &mut [f32], idx: &mut [usize]) {
    let kd = vals.len();
    for (j, &v) in row.iter().enumerate().take(kd) {
        insert_sorted(vals, idx, j, v, j);
    }
    for (j, &v) in row.iter().enumerate().skip(kd) {
        if v < vals[kd - 1] {
            insert_sorted(vals, idx, kd - 1, v, j);
        }
    }
}

/// Inserts (v, j) into the sorted prefix `vals[..=last]`, dropping what was at `last`.
#[inline(always)]
fn insert_sorted(vals: &mut [f32], idx: &mut [usize], last: usize, v: f32, j: usize) {
    let mut p = last;
    while p > 0 && vals[p - 1] > v {
        vals[p] = vals[p - 1];
        idx[p] = idx[p - 1];
        p -= 1;
    }
    vals[p] = v;
    idx[p] = j;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_smallest_is_sorted_and_stable() {
        let row = [5.0f32, 1.0, 3.0, 1.0, 0.5, 9.0, 3.0];
        let mut vals = [0f32; 4];
        let mut idx = [0usize; 4];
        select_smallest(&row, &mut vals, &mut idx, &mut Scratch::new(4, row.len()));
        assert_eq!(vals, [0.5, 1.0, 1.0, 3.0]);
        assert_eq!(idx, [4, 1, 3, 2]);
        let (mut plain_vals, mut plain_idx) = ([0f32; 4], [0usize; 4]);
        select_smallest_plain(&row, &mut plain_vals, &mut plain_idx);
        assert_eq!((plain_vals, plain_idx), (vals, idx));
    }

    #[test]
    fn cpu_kernel_equals_torch_ops() {
        tch::manual_seed(3);
        for (b, n, m, c, k, dil) in [(2, 50, 13, 7, 4, 1), (3, 20, 20, 16, 3, 2), (1, 9, 5, 4, 9, 2)] {
            let dist = Tensor::randn([b, n, m], (Kind::Float, Device::Cpu));
            let keys = Tensor::randn([b, m, c], (Kind::Float, Device::Cpu));
            let fast = knn_max(&dist, &keys, k, dil);
            let reference = knn_max_torch(&dist, &keys, k, dil);
            assert_eq!(fast.size(), [b, n, c]);
            assert!(fast.equal(&reference), "b={b} n={n} m={m} c={c} k={k} dil={dil}");
        }
    }

    #[test]
    fn non_contiguous_inputs_are_handled() {
        tch::manual_seed(4);
        let dist = Tensor::randn([2, 13, 30], (Kind::Float, Device::Cpu)).transpose(1, 2);
        let keys = Tensor::randn([2, 6, 13], (Kind::Float, Device::Cpu)).transpose(1, 2);
        assert!(knn_max(&dist, &keys, 3, 1).equal(&knn_max_torch(&dist, &keys, 3, 1)));
    }
}
