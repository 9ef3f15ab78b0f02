//! The few dense operations query-time inference needs, on row-major `f32` slices, written
//! out: a query's products are all "many rows against a few vectors" (a 49 × 512 region
//! block against 5 words, a 1536 × 512 GRU matrix against one state), where a blocked GEMM
//! (matrixmultiply was tried) spends more time packing the big operand than multiplying
//! (measured: 13% of a query in packing, 6% in the kernel). Compiled for AVX2+FMA too and
//! chosen at run time.

/// `out (k×m)[i][j] = a_i · w_j` for the rows of `a` (k×d) and `w` (m×d): the similarity
/// block of Eq. 5, and `x Wᵀ` for a weight matrix W stored as PyTorch stores it (out × in).
pub fn row_dots(a: &[f32], w: &[f32], out: &mut [f32], d: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for (checked above).
        return unsafe { row_dots_avx2(a, w, out, d) };
    }
    row_dots_body(a, w, out, d)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_dots_avx2(a: &[f32], w: &[f32], out: &mut [f32], d: usize) {
    row_dots_body(a, w, out, d)
}

#[inline(always)]
fn row_dots_body(a: &[f32], w: &[f32], out: &mut [f32], d: usize) {
    let m = w.len() / d;
    for (row, o) in a.chunks_exact(d).zip(out.chunks_exact_mut(m)) {
        for (word, o) in w.chunks_exact(d).zip(o.iter_mut()) {
            *o = dot_body(row, word);
        }
    }
}

/// `out (m×d)[j] = Σ_i weights[j][i] · a_i` for `weights` (m×k) and the rows of `a` (k×d):
/// the attended region vectors of Eq. 13.
pub fn weighted_row_sums(weights: &[f32], a: &[f32], out: &mut [f32], d: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for (checked above).
        return unsafe { weighted_row_sums_avx2(weights, a, out, d) };
    }
    weighted_row_sums_body(weights, a, out, d)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weighted_row_sums_avx2(weights: &[f32], a: &[f32], out: &mut [f32], d: usize) {
    weighted_row_sums_body(weights, a, out, d)
}

#[inline(always)]
fn weighted_row_sums_body(weights: &[f32], a: &[f32], out: &mut [f32], d: usize) {
    let k = a.len() / d;
    for (w, o) in weights.chunks_exact(k).zip(out.chunks_exact_mut(d)) {
        o.iter_mut().for_each(|x| *x = 0.0);
        for (&wi, row) in w.iter().zip(a.chunks_exact(d)) {
            if wi != 0.0 {
                o.iter_mut().zip(row).for_each(|(x, &v)| *x += wi * v);
            }
        }
    }
}

/// Inner product of two vectors of equal length, with eight partial sums so that the
/// compiler vectorises it (a plain `sum()` must add in order and does not).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_body(a, b)
}

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Divides `v` by its L2 norm, floored at 1e-12 as `features::l2_normalize` does.
#[inline]
pub fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// In-place softmax of `x` (max subtracted first, as libtorch does).
#[inline]
pub fn softmax(x: &mut [f32]) {
    let top = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - top).exp();
        sum += *v;
    }
    x.iter_mut().for_each(|v| *v /= sum);
}

#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_kernels_match_the_definition() {
        let (k, m, d) = (7, 3, 21);
        let a: Vec<f32> = (0..k * d).map(|x| ((x * 37 % 11) as f32) - 5.0).collect();
        let w: Vec<f32> = (0..m * d).map(|x| ((x * 13 % 7) as f32) * 0.25).collect();
        let mut got = vec![0.0; k * m];
        row_dots(&a, &w, &mut got, d);
        for i in 0..k {
            for j in 0..m {
                let want: f32 = (0..d).map(|l| a[i * d + l] * w[j * d + l]).sum();
                assert!((got[i * m + j] - want).abs() < 1e-3, "({i},{j}): {} vs {want}", got[i * m + j]);
            }
        }
        let weights: Vec<f32> = (0..m * k).map(|x| if x % 4 == 0 { 0.0 } else { x as f32 * 0.1 }).collect();
        let mut got = vec![1.0; m * d];
        weighted_row_sums(&weights, &a, &mut got, d);
        for j in 0..m {
            for l in 0..d {
                let want: f32 = (0..k).map(|i| weights[j * k + i] * a[i * d + l]).sum();
                assert!((got[j * d + l] - want).abs() < 1e-3, "({j},{l}): {} vs {want}", got[j * d + l]);
            }
        }
    }

    #[test]
    fn softmax_and_normalize() {
        let mut x = vec![1.0, 2.0, 3.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0]);
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let mut zero = vec![0.0; 4];
        normalize(&mut zero);
        assert!(zero.iter().all(|x| *x == 0.0));
    }
}
