//! Tensor types of the exports: `--dtype` for the Hugging Face folder, `--quant` for merged GGUF.
//!
//! Owns: the candle type an `hf` dtype stands for, llama.cpp's fallback when a k-quant does not fit a row
//! length (k-quants need rows that are multiples of 256), and `general.file_type` for a file
//! quantized to one type. The names users type (`--dtype`, `--quant`, `output.export`) are
//! parsed in `recipe::export`.

use candle_core::quantized::GgmlDType;
use candle_core::DType;

pub use crate::recipe::export::{type_name, HfDtype, QuantChoice};

impl HfDtype {
    pub fn dtype(self) -> DType {
        match self {
            HfDtype::Bf16 => DType::BF16,
            HfDtype::F16 => DType::F16,
            HfDtype::F32 => DType::F32,
        }
    }
}

/// The type a matrix with rows of `cols` values gets when `want` is asked for (see `gguf`).
pub use crate::gguf::fit_type as fit;

/// Bits per weight of `t` (f32 32, q8_0 8.5, q4_k 4.5, ...).
pub fn bits_per_weight(t: GgmlDType) -> f64 {
    (t.type_size() * 8) as f64 / t.block_size() as f64
}

/// What `--quant keep` tries for a merged matrix stored as `base` with rows of `cols`, smallest
/// first: the base type, then q4_k, q5_k, q6_k, q8_0, f16 (each fitted to the row length), never
/// one with fewer bits per weight than the base's.
pub fn ladder(base: GgmlDType, cols: usize) -> Vec<GgmlDType> {
    let floor = bits_per_weight(base);
    let mut out = vec![base];
    for t in [
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::Q8_0,
        GgmlDType::F16,
    ] {
        let t = fit(t, cols);
        if bits_per_weight(t) >= floor && !out.contains(&t) {
            out.push(t);
        }
    }
    out.sort_by(|a, b| bits_per_weight(*a).total_cmp(&bits_per_weight(*b)));
    out
}

/// llama.cpp's `general.file_type` (`llama_ftype`) for a file of one type.
pub fn file_type(t: GgmlDType) -> u32 {
    match t {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q8_0 => 7,
        GgmlDType::Q5_0 => 8,
        GgmlDType::Q5_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 14,
        GgmlDType::Q5K => 16,
        GgmlDType::Q6K => 18,
        GgmlDType::BF16 => 32,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_falls_back_like_llama_cpp() {
        assert_eq!("base".parse::<QuantChoice>(), Ok(QuantChoice::Base));
        assert_eq!(
            "Q8_0".parse::<QuantChoice>(),
            Ok(QuantChoice::All(GgmlDType::Q8_0))
        );
        assert!("q9_9".parse::<QuantChoice>().unwrap_err().contains("q4_k"));
        assert_eq!(fit(GgmlDType::Q4K, 2048), GgmlDType::Q4K);
        assert_eq!(fit(GgmlDType::Q4K, 640), GgmlDType::Q5_0);
        assert_eq!(fit(GgmlDType::Q6K, 576), GgmlDType::Q8_0);
        assert_eq!(fit(GgmlDType::Q4_0, 48), GgmlDType::F16);
        assert_eq!("keep".parse::<QuantChoice>(), Ok(QuantChoice::Keep));
        assert_eq!(QuantChoice::default(), QuantChoice::Keep);
    }

    #[test]
    fn the_keep_ladder_never_goes_below_the_base() {
        use GgmlDType::*;
        // SmolLM2's 576-wide rows: no k-quant fits, their fallbacks do.
        assert_eq!(ladder(Q4_1, 576), [Q4_1, Q5_0, Q5_1, Q8_0, F16]);
        assert_eq!(ladder(Q4K, 2048), [Q4K, Q5K, Q6K, Q8_0, F16]);
        assert_eq!(ladder(Q6K, 2048), [Q6K, Q8_0, F16]);
        assert_eq!(ladder(Q8_0, 2048), [Q8_0, F16]);
        for base in [Q4_0, Q4_1, Q5_0, Q4K, Q5K, Q6K, Q8_0, F16] {
            for cols in [576, 640, 2048, 1536] {
                let l = ladder(base, cols);
                assert_eq!(l[0], base);
                assert!(l
                    .iter()
                    .all(|t| bits_per_weight(*t) >= bits_per_weight(base)));
            }
        }
    }
}
