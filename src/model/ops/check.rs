//! The test harness of the ops: each op's CPU kernel held against its Candle form (whose
//! backward is candle's own), values and the gradient of `sum(y · r)` for a random `r`.

use candle_core::{Device, Result, Tensor, Var};

use crate::synth::uniform_values;

pub(crate) fn tensor(dims: &[usize], seed: u64, scale: f32) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(uniform_values(n, seed, scale), dims, &Device::Cpu).unwrap()
}

pub(crate) fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// `max |a - b| / max |b|` under `tol`, or what differed.
fn close(what: &str, a: &Tensor, b: &Tensor, tol: f32) -> std::result::Result<(), String> {
    if a.dims() != b.dims() {
        return Err(format!("{what}: shapes {:?} vs {:?}", a.dims(), b.dims()));
    }
    let (a, b) = (values(a), values(b));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let err = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    if err <= tol * scale {
        Ok(())
    } else {
        Err(format!("{what}: max error {err} against a max of {scale}"))
    }
}

/// Values and input gradients of `f` and `reference` (the Candle form) at the same inputs, with the loss
/// `sum(y · r)` for a fixed random `r`, to 1e-5 of the largest reference value.
pub(crate) fn compare(
    what: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> std::result::Result<(), String> {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let ours = f(&xs).unwrap();
    let want = reference(&xs).unwrap();
    close(&format!("{what} values"), &ours, &want, 1e-5)?;
    let r = tensor(want.dims(), 99, 1.0);
    let g_ours = ours.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let g_want = want.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, x) in xs.iter().enumerate() {
        let a = g_ours
            .get(x)
            .ok_or_else(|| format!("{what}: no gradient for input {i}"))?;
        close(
            &format!("{what} gradient {i}"),
            a,
            g_want.get(x).unwrap(),
            1e-5,
        )?;
    }
    Ok(())
}

pub(crate) fn check(
    what: &str,
    inputs: &[Tensor],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[Tensor]) -> Result<Tensor>,
) {
    if let Err(e) = compare(what, inputs, f, reference) {
        panic!("{e}")
    }
}
