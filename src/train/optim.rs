//! AdamW (Loshchilov & Hutter 2019, Algorithm 2; PyTorch's `torch.optim.AdamW` update) over the
//! adapter tensors, with state that can be saved and restored exactly (candle-nn's keeps its
//! moments private, which rules out an exact resume), plus global-norm gradient clipping.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Result, Tensor, Var};

pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Optimizer steps taken.
    pub step: usize,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl AdamW {
    pub fn new(vars: &[&Var], weight_decay: f64) -> Result<Self> {
        let zeros = |v: &&Var| v.as_tensor().zeros_like();
        Ok(Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step: 0,
            m: vars.iter().map(zeros).collect::<Result<_>>()?,
            v: vars.iter().map(zeros).collect::<Result<_>>()?,
        })
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to `vars[i]`.
    pub fn step(&mut self, vars: &[&Var], grads: &[Tensor], lr: f64) -> Result<()> {
        if vars.len() != self.m.len() || grads.len() != vars.len() {
            candle_core::bail!(
                "optimizer built for {} tensors, got {} / {} grads",
                self.m.len(),
                vars.len(),
                grads.len()
            )
        }
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let c1 = 1.0 - b1.powi(t);
        let c2 = 1.0 - b2.powi(t);
        for i in 0..vars.len() {
            let g = &grads[i];
            self.m[i] = ((&self.m[i] * b1)? + (g * (1.0 - b1))?)?;
            self.v[i] = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let mhat = (&self.m[i] / c1)?;
            let vhat = (&self.v[i] / c2)?;
            let p = vars[i].as_tensor();
            let decayed = (p * (1.0 - lr * self.weight_decay))?;
            let update = (mhat / (vhat.sqrt()? + self.eps)?)?;
            vars[i].set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// Moments as named tensors (`m.{i}`, `v.{i}`) for a checkpoint; `step` goes in its state.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            out.insert(format!("m.{i}"), m.clone());
            out.insert(format!("v.{i}"), v.clone());
        }
        out
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.tensors(), path)
    }

    /// Restore moments saved by [`AdamW::save`] and the step count.
    pub fn load(&mut self, path: &Path, step: usize, device: &Device) -> Result<()> {
        let t = candle_core::safetensors::load(path, device)?;
        for i in 0..self.m.len() {
            let get = |k: String| {
                t.get(&k).cloned().ok_or_else(|| {
                    candle_core::Error::Msg(format!("{}: {k} is missing", path.display()))
                })
            };
            let (m, v) = (get(format!("m.{i}"))?, get(format!("v.{i}"))?);
            if m.shape() != self.m[i].shape() || v.shape() != self.v[i].shape() {
                candle_core::bail!(
                    "{}: moment {i} has shape {:?}, expected {:?}",
                    path.display(),
                    m.dims(),
                    self.m[i].dims()
                )
            }
            self.m[i] = m;
            self.v[i] = v;
        }
        self.step = step;
        Ok(())
    }
}

/// Add one backward's gradients into `acc` (`grads[i]` and `acc[i]` belong to the same variable;
/// `None` where it got no gradient).
pub fn accumulate(acc: &mut [Option<Tensor>], grads: Vec<Option<Tensor>>) -> Result<()> {
    for (a, g) in acc.iter_mut().zip(grads) {
        *a = match (a.take(), g) {
            (Some(a), Some(g)) => Some((a + g)?),
            (a, g) => a.or(g),
        };
    }
    Ok(())
}

/// The update of one training step: the accumulated gradients (zeros where a tensor got none),
/// clipped to `max_grad_norm` when given, then one AdamW step at `lr`. Returns the global norm
/// before clipping (TRL's `grad_norm`).
pub fn apply(
    opt: &mut AdamW,
    vars: &[&Var],
    acc: Vec<Option<Tensor>>,
    lr: f64,
    max_grad_norm: Option<f64>,
) -> Result<f64> {
    let mut grads: Vec<Tensor> = acc
        .into_iter()
        .zip(vars)
        .map(|(g, v)| g.map_or_else(|| v.as_tensor().zeros_like(), Ok))
        .collect::<Result<_>>()?;
    let grad_norm = global_norm(&grads)?;
    if let Some(max) = max_grad_norm {
        clip(&mut grads, grad_norm, max)?;
    }
    opt.step(vars, &grads, lr)?;
    Ok(grad_norm)
}

/// The global L2 norm of `grads`: f32 sums of squares per tensor, added on their device.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    if grads.is_empty() {
        return Ok(0.0);
    }
    // The per-tensor sums stay on the device and are added there: one read back (one device
    // sync) for the whole step, not one per tensor.
    let parts = grads
        .iter()
        .map(|g| g.to_dtype(candle_core::DType::F32)?.sqr()?.sum_all())
        .collect::<Result<Vec<_>>>()?;
    let s = Tensor::stack(&parts, 0)?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok(s.sqrt())
}

/// Scale `grads` so their global norm is at most `max_norm` (PyTorch `clip_grad_norm_`).
pub fn clip(grads: &mut [Tensor], norm: f64, max_norm: f64) -> Result<()> {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g = (&*g * coef)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two steps on f(p) = Σ p² against the update worked out by hand.
    #[test]
    fn adamw_matches_hand_computed_steps() {
        let dev = Device::Cpu;
        let p = Var::new(&[1.0f32, -2.0], &dev).unwrap();
        let mut opt = AdamW::new(&[&p], 0.1).unwrap();
        // step 1: g = 2p = [2, -4]; m = 0.1g, v = 0.001g²; mhat = g, vhat = g²; update = g/(|g|+eps) = ±1
        // p ← p·(1 − 0.01·0.1) − 0.01·sign(g) = [0.999 − 0.01, −1.998 + 0.01] = [0.989, −1.988]
        let g = (p.as_tensor() * 2.0).unwrap();
        opt.step(&[&p], &[g], 0.01).unwrap();
        let v = p.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (v[0] - 0.989).abs() < 1e-6 && (v[1] + 1.988).abs() < 1e-6,
            "{v:?}"
        );
        // the state survives a save/load round trip
        let dir = tempfile::tempdir().unwrap();
        opt.save(&dir.path().join("o.safetensors")).unwrap();
        let mut opt2 = AdamW::new(&[&p], 0.1).unwrap();
        opt2.load(&dir.path().join("o.safetensors"), 1, &dev)
            .unwrap();
        let q = Var::from_tensor(&p.as_tensor().copy().unwrap()).unwrap();
        let g = (p.as_tensor() * 2.0).unwrap();
        opt.step(&[&p], std::slice::from_ref(&g), 0.01).unwrap();
        opt2.step(&[&q], &[g], 0.01).unwrap();
        assert_eq!(
            p.as_tensor().to_vec1::<f32>().unwrap(),
            q.as_tensor().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let dev = Device::Cpu;
        let mut g = vec![
            Tensor::new(&[3.0f32], &dev).unwrap(),
            Tensor::new(&[4.0f32], &dev).unwrap(),
        ];
        let n = global_norm(&g).unwrap();
        assert_eq!(n, 5.0);
        clip(&mut g, n, 1.0).unwrap();
        assert!((global_norm(&g).unwrap() - 1.0).abs() < 1e-5);
    }
}
