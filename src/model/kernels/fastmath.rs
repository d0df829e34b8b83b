//! Element-wise math the compiler can vectorize: a branch-free f32 `exp` (and the sigmoid and
//! tanh built on it), and [`wide`], which runs a loop compiled for AVX2 + FMA where the CPU has
//! them.
//!
//! Owns: the functions and their accuracy (within 2e-7 relative of f64 `exp` over the range
//! where f32 `exp` is normal; `exp(x)` is exactly 0 below -87, where the true value is a
//! subnormal). Does not: own any kernel (see `ops`, `attend`).
//!
//! Why: the attention softmax and the gated activations called libm's `expf` one value at a
//! time, which took more time than the matrix products of the attention (FACTS.md: element-wise
//! ops dominate what is not a matmul); the portable build targets baseline x86-64, so a loop is
//! vectorized 4 wide unless compiled for more.

/// `e^x` for f32, Cephes' `expf` polynomial after a Cody-Waite reduction by ln 2. No branches:
/// clamping and the underflow to 0 compile to selects, so a loop over a slice vectorizes.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // round-to-nearest by adding and removing 1.5 · 2^23
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(-87.0, 88.0);
    let n = (xc * LOG2E + ROUND) - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n from its exponent bits; n is in [-126, 127] after the clamp
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 {
        0.0
    } else {
        e * scale
    }
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh(x) = 1 - 2 / (e^2x + 1)`; exact ±1 in the tails (`exp` saturates, never overflows).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// `Σ xs` in eight interleaved partial sums (which a loop can hold in one vector register; one
/// running sum is a chain of dependent adds), added up at the end.
#[inline(always)]
pub fn lane_sum(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += x;
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    lanes.iter().sum::<f32>() + tail
}

/// `max xs` (`-inf` for none) in eight interleaved partial maxima, as [`lane_sum`] does.
#[inline(always)]
pub fn lane_max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = if x > *l { x } else { *l };
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    lanes.iter().copied().fold(tail, f32::max)
}

/// `Σ xs` in f64, eight partial sums as in [`lane_sum`].
#[inline(always)]
pub fn lane_sum_f64(xs: &[f32]) -> f64 {
    let mut lanes = [0f64; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l += x as f64;
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&x| x as f64).sum();
    lanes.iter().sum::<f64>() + tail
}

/// Run `f` compiled for AVX2 + FMA on a CPU that has them, else as built. The closure must be
/// marked `#[inline(always)]` (`wide(#[inline(always)] || kernel(..))`, the kernel too): only
/// code inlined into the function with those features is compiled for them.
#[inline(always)]
pub fn wide<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // Safety: the CPU has the features the function is compiled for.
            return unsafe { avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(a: f32, b: f64) -> f64 {
        ((a as f64) - b).abs() / b.abs().max(f64::MIN_POSITIVE)
    }

    #[test]
    fn exp_is_within_two_tenths_of_a_millionth_of_f64() {
        let mut worst = (0f64, 0f32);
        let mut x = -87.0f32;
        while x <= 88.0 {
            let e = rel(exp(x), (x as f64).exp());
            if e > worst.0 {
                worst = (e, x);
            }
            x += 0.000_731;
        }
        assert!(
            worst.0 < 2e-7,
            "relative error {} at x = {}",
            worst.0,
            worst.1
        );
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn exp_tails_are_zero_and_finite_and_nan_free() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(f32::INFINITY).is_finite() && exp(1e9) > 1e38);
        assert!(sigmoid(-1e9) >= 0.0 && sigmoid(-1e9) < 1e-37);
        assert_eq!(sigmoid(1e9), 1.0);
        assert_eq!(tanh(1e9), 1.0);
        assert_eq!(tanh(-1e9), -1.0);
    }

    #[test]
    fn sigmoid_and_tanh_match_f64() {
        for i in -4000..4000 {
            let x = i as f32 * 0.005;
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((sigmoid(x) as f64 - s).abs() < 3e-7, "sigmoid({x})");
            assert!(
                (tanh(x) as f64 - (x as f64).tanh()).abs() < 5e-7,
                "tanh({x})"
            );
        }
    }

    #[test]
    fn lane_sums_add_every_value() {
        for n in [0, 1, 7, 8, 9, 100, 1001] {
            let xs: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.25 - 1.0).collect();
            let want: f64 = xs.iter().map(|&x| x as f64).sum();
            assert!((lane_sum(&xs) as f64 - want).abs() < 1e-4, "{n}");
            assert!((lane_sum_f64(&xs) - want).abs() < 1e-9, "{n}");
            let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(lane_max(&xs), max, "{n}");
        }
    }

    #[test]
    fn wide_runs_the_same_loop() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.17).collect();
        let plain: Vec<f32> = xs.iter().map(|&x| exp(x)).collect();
        let w: Vec<f32> = wide(
            #[inline(always)]
            || xs.iter().map(|&x| exp(x)).collect(),
        );
        for (a, b) in plain.iter().zip(&w) {
            assert!((a - b).abs() <= 2e-7 * a.abs(), "{a} {b}");
        }
    }
}
