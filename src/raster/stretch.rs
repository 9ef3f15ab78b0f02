//! Conversion of scene values to 8 bits: a per-band linear stretch between two values
//! (the 2nd and 98th percentiles of a sample, or `--scale MIN,MAX`).

/// Linear map of `[lo, hi]` onto `0..=255`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stretch {
    pub lo: f64,
    pub hi: f64,
}

impl Stretch {
    /// The `lower`–`upper` percentile range of `values` (NaNs ignored); `None` when no value.
    pub fn from_percentiles(values: &mut Vec<f32>, lower: f64, upper: f64) -> Option<Stretch> {
        values.retain(|v| !v.is_nan());
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(f32::total_cmp);
        let at = |p: f64| values[(((values.len() - 1) as f64) * p / 100.0).round() as usize] as f64;
        let (lo, mut hi) = (at(lower), at(upper));
        if hi <= lo {
            hi = lo + 1.0;
        }
        Some(Stretch { lo, hi })
    }

    /// The 8-bit value of `v` (clamped).
    #[inline]
    pub fn apply(&self, v: f32) -> u8 {
        let t = (v as f64 - self.lo) / (self.hi - self.lo);
        (t * 255.0).round().clamp(0.0, 255.0) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_ignore_nan_and_clip_outliers() {
        let mut v: Vec<f32> = (0..=100).map(|x| x as f32).collect();
        v.push(f32::NAN);
        let s = Stretch::from_percentiles(&mut v, 2.0, 98.0).unwrap();
        assert_eq!((s.lo, s.hi), (2.0, 98.0));
        assert_eq!(s.apply(2.0), 0);
        assert_eq!(s.apply(98.0), 255);
        assert_eq!(s.apply(50.0), 128);
        assert_eq!(s.apply(10_000.0), 255);
        assert!(Stretch::from_percentiles(&mut vec![f32::NAN], 2.0, 98.0).is_none());
        assert_eq!(Stretch::from_percentiles(&mut vec![5.0; 10], 2.0, 98.0).unwrap().hi, 6.0);
    }
}
