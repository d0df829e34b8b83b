//! LoRA adapters: the only trainable weights. PEFT's conventions, so export is a rename:
//! `A (r, in)` Kaiming-uniform (`bound = 1/sqrt(in)`, PEFT's `kaiming_uniform_(a=√5)`),
//! `B (out, r)` zeros, `delta(x) = scale · (dropout(x) · Aᵀ) · Bᵀ`, `scale = alpha / r`
//! (rsLoRA: `alpha / sqrt(r)`). B = 0 at init, so the policy starts equal to the reference.
//!
//! Owns: the adapter tensors, their init, their forward branch and dropout. Does not: decide
//! which model is the reference (the caller passes an [`Adapters`] value), train, or read and
//! write PEFT folders (see `peft`).

use std::collections::BTreeMap;

use candle_core::{Device, Result, Tensor, Var};

pub use crate::recipe::Target;
use crate::rng::SplitMix64;

/// Shape and scaling of a set of adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub targets: Vec<Target>,
    pub use_rslora: bool,
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// One adapted linear: `A (r, in)`, `B (out, r)`, f32 master weights.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
}

/// All adapters of a model, keyed by `(layer, target)`.
#[derive(Debug, Clone)]
pub struct Lora {
    pub config: LoraConfig,
    pub layers: BTreeMap<(usize, Target), LoraLinear>,
}

/// Which model to run. Passed by value into every forward so the choice is visible at the call
/// site: the reference is `Off` (or a frozen set), the policy `On` / `Train`.
#[derive(Debug, Clone, Copy)]
pub enum Adapters<'a> {
    /// The bare base: π_ref when no adapter was given to start from.
    Off,
    /// Base + adapters, no dropout and no gradient graph (evaluation, scoring, generation, the
    /// frozen `init_from` reference).
    On(&'a Lora),
    /// Base + adapters with gradients, dropout drawn from `seed` (a training micro-batch).
    Train(&'a Lora, u64),
}

impl Lora {
    /// Fresh adapters for every `(layer, target)`; `dims(layer, target) = (in, out)`.
    /// A is drawn from `seed` per `(layer, target)` stream, so adding targets does not change others.
    pub fn init(
        config: LoraConfig,
        n_layer: usize,
        dims: impl Fn(usize, Target) -> (usize, usize),
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut layers = BTreeMap::new();
        for il in 0..n_layer {
            for &t in &config.targets {
                let (i, o) = dims(il, t);
                let bound = 1.0 / (i as f64).sqrt();
                let mut rng = SplitMix64::keyed(&[seed, 0x10a, il as u64, t as u64]);
                let a: Vec<f32> = (0..config.rank * i)
                    .map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32)
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (config.rank, i), device)?)?;
                let b = Var::zeros((o, config.rank), candle_core::DType::F32, device)?;
                layers.insert(
                    (il, t),
                    LoraLinear {
                        a,
                        b,
                        scale: config.scale(),
                    },
                );
            }
        }
        Ok(Self { config, layers })
    }

    pub fn get(&self, layer: usize, target: Target) -> Option<&LoraLinear> {
        self.layers.get(&(layer, target))
    }

    /// Every trainable tensor, A then B per adapted linear, in a stable order.
    pub fn vars(&self) -> Vec<&Var> {
        self.layers.values().flat_map(|l| [&l.a, &l.b]).collect()
    }

    /// A deep copy (the reference when starting from an adapter): optimizer steps update a `Var`
    /// in place, so a shallow clone would move with the policy.
    pub fn frozen_copy(&self) -> Result<Self> {
        let mut layers = BTreeMap::new();
        for (k, l) in &self.layers {
            let a = Var::from_tensor(&l.a.as_tensor().copy()?)?;
            let b = Var::from_tensor(&l.b.as_tensor().copy()?)?;
            layers.insert(
                *k,
                LoraLinear {
                    a,
                    b,
                    scale: l.scale,
                },
            );
        }
        Ok(Self {
            config: self.config.clone(),
            layers,
        })
    }

    /// The adapter's branch at `(layer, target)`, or `None` where there is none.
    /// `train = Some(seed)`: tracked for gradients, with dropout from `seed`; `None`: detached.
    pub fn branch_at(&self, layer: usize, target: Target, train: Option<u64>) -> Option<Branch> {
        let l = self.get(layer, target)?;
        let (a, b) = match train {
            Some(_) => (l.a.as_tensor().clone(), l.b.as_tensor().clone()),
            None => (l.a.as_tensor().detach(), l.b.as_tensor().detach()),
        };
        let drop = train.and_then(|seed| Dropout::draw(self.config.dropout, seed, layer, target));
        Some(Branch {
            a,
            b,
            scale: l.scale,
            drop,
        })
    }
}

/// One linear's LoRA branch, ready to run: `scale · (dropout(x) · Aᵀ) · Bᵀ`. The forward adds it
/// to the frozen linear's output (in one op where it can, see `adapted`).
#[derive(Debug, Clone)]
pub struct Branch {
    /// `(r, in)`
    pub a: Tensor,
    /// `(out, r)`
    pub b: Tensor,
    pub scale: f64,
    pub drop: Option<Dropout>,
}

impl Branch {
    /// The branch's output for `x (.., in)`, in f32.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        branch(x, &self.a, &self.b, self.scale, self.drop.clone())
    }
}

/// An inverted-dropout draw: probability `p`, its mask a function of the key in `rng`.
#[derive(Debug, Clone)]
pub struct Dropout {
    pub p: f64,
    pub rng: SplitMix64,
}

impl Dropout {
    /// The draw of `(layer, target)` in the micro-batch `seed`, or `None` when `p == 0`. The same
    /// seed gives the same mask (resume, and the recompute of a checkpointed block).
    pub fn draw(p: f64, seed: u64, layer: usize, target: Target) -> Option<Self> {
        (p > 0.0).then(|| Self {
            p,
            rng: SplitMix64::keyed(&[seed, layer as u64, target as u64]),
        })
    }

    /// The mask for `shape` on `device`: 0 with probability `p`, else `1 / (1 - p)`, drawn where
    /// it is used. On the CPU it is the key's splitmix64 stream, one value per element. On a GPU
    /// it is the device's own generator (cuRAND on CUDA), re-seeded from the key before the draw,
    /// so no host tensor is built or uploaded and the same key draws the same mask again (the
    /// recompute of a checkpointed block). This is the one decision here made from the device
    /// rather than the backend: the generator is the device's.
    pub fn mask(&self, shape: &candle_core::Shape, device: &candle_core::Device) -> Result<Tensor> {
        let keep = 1.0 / (1.0 - self.p);
        if device.is_cpu() {
            let mut rng = self.rng.clone();
            let mask: Vec<f32> = (0..shape.elem_count())
                .map(|_| {
                    if rng.uniform() > self.p {
                        keep as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            return Tensor::from_vec(mask, shape, device);
        }
        device.set_seed(self.rng.clone().next_u64())?;
        let u = Tensor::rand(0f32, 1f32, shape, device)?;
        u.ge(self.p)?
            .to_dtype(candle_core::DType::F32)?
            .affine(keep, 0.0)
    }
}

/// The LoRA branch `scale · (dropout(x) · Aᵀ) · Bᵀ` for `A (r, in)`, `B (out, r)`, in f32 whatever
/// `x`'s type (the adapter weights are f32 masters); differentiable w.r.t. whatever of `x`, `a`,
/// `b` is tracked. Called only where an adapter sits, so a forward without adapters casts nothing.
pub fn branch(
    x: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    drop: Option<Dropout>,
) -> Result<Tensor> {
    let x = x.to_dtype(candle_core::DType::F32)?;
    let x = match drop {
        Some(d) => x.mul(&d.mask(x.shape(), x.device())?)?,
        None => x,
    };
    let xa = x.broadcast_matmul(&a.t()?)?;
    xa.broadcast_matmul(&b.t()?)? * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_alpha_over_rank_or_its_square_root_and_b_starts_at_zero() {
        let mut c = LoraConfig {
            rank: 16,
            alpha: 32.0,
            dropout: 0.0,
            targets: vec![Target::QProj],
            use_rslora: false,
        };
        assert_eq!(c.scale(), 2.0);
        c.use_rslora = true;
        assert_eq!(c.scale(), 8.0);
        let l = Lora::init(c, 2, |_, _| (64, 32), 1, &Device::Cpu).unwrap();
        let q = l.get(1, Target::QProj).unwrap();
        assert_eq!(q.a.dims(), [16, 64]);
        assert_eq!(q.b.dims(), [32, 16]);
        assert_eq!(
            q.b.as_tensor()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        let a =
            q.a.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
        let bound = 1.0 / 8.0; // 1/sqrt(in = 64): PEFT's kaiming_uniform_(a = sqrt(5))
        assert!(a.iter().all(|x| x.abs() <= bound) && a.iter().any(|x| x.abs() > 0.9 * bound));
        assert!(l.get(0, Target::KProj).is_none());
    }

    /// A mask is inverted dropout at rate `p`, a function of its key alone.
    #[test]
    fn dropout_masks_drop_at_the_rate_and_repeat_for_the_same_key() {
        let dev = candle_core::Device::Cpu;
        let shape = candle_core::Shape::from((64, 256));
        let values = |d: &Dropout| {
            let m = d.mask(&shape, &dev).unwrap();
            m.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let d = Dropout::draw(0.25, 7, 3, Target::VProj).unwrap();
        let m = values(&d);
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / m.len() as f64;
        assert!((dropped - 0.25).abs() < 0.02, "dropped {dropped}");
        let keep = (1.0f64 / 0.75) as f32;
        assert!(m.iter().all(|&v| v == 0.0 || v == keep));
        assert_eq!(
            m,
            values(&Dropout::draw(0.25, 7, 3, Target::VProj).unwrap())
        );
        assert_ne!(
            m,
            values(&Dropout::draw(0.25, 8, 3, Target::VProj).unwrap())
        );
        assert_ne!(
            m,
            values(&Dropout::draw(0.25, 7, 3, Target::OProj).unwrap())
        );
        assert!(Dropout::draw(0.0, 7, 3, Target::VProj).is_none());
    }
}
