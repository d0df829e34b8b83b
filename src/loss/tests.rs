//! Each loss against numbers worked out by hand (the arithmetic is in the comments), and the
//! step-0 identity: equal policy and reference give ln 2 and zero rewards.

use candle_core::{Device, Tensor, Var};

use super::*;

fn t(v: &[f32]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn run(
    loss: PreferenceLoss,
    pc: &[f32],
    pr: &[f32],
    rc: &[f32],
    rr: &[f32],
    lc: &[f32],
    lr: &[f32],
    rpo: Option<f64>,
) -> (f64, Vec<f32>, Vec<f32>) {
    let (pc, pr, rc, rr, lc, lr) = (t(pc), t(pr), t(rc), t(rr), t(lc), t(lr));
    let out = loss
        .compute(
            &LossInputs {
                policy_chosen: &pc,
                policy_rejected: &pr,
                ref_chosen: Some(&rc),
                ref_rejected: Some(&rr),
                chosen_len: &lc,
                rejected_len: &lr,
            },
            rpo,
        )
        .unwrap();
    (
        out.loss.to_scalar::<f32>().unwrap() as f64,
        out.rewards_chosen,
        out.rewards_rejected,
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-5 * (1.0 + b.abs())
}

#[test]
fn sigmoid_step_zero_is_ln2_with_zero_rewards() {
    let (l, c, r) = run(
        PreferenceLoss::Sigmoid {
            beta: 0.1,
            label_smoothing: 0.0,
        },
        &[-12.0, -30.0],
        &[-15.0, -8.0],
        &[-12.0, -30.0],
        &[-15.0, -8.0],
        &[3.0, 9.0],
        &[4.0, 2.0],
        None,
    );
    assert!(close(l, std::f64::consts::LN_2), "{l}");
    assert_eq!((c, r), (vec![0.0, 0.0], vec![0.0, 0.0]));
}

#[test]
fn sigmoid_by_hand() {
    // pair: πc−rc = −10+12 = 2, πr−rr = −20+19 = −1, h = 0.5·(2+1) = 1.5
    // −log σ(1.5) = log(1 + e^−1.5) = log(1.2231302) = 0.2014133
    // with ε = 0.2: 0.8·0.2014133 + 0.2·(−log σ(−1.5) = 1.7014133) = 0.1611306 + 0.3402827 = 0.5014133
    let (l, c, r) = run(
        PreferenceLoss::Sigmoid {
            beta: 0.5,
            label_smoothing: 0.0,
        },
        &[-10.0],
        &[-20.0],
        &[-12.0],
        &[-19.0],
        &[1.0],
        &[1.0],
        None,
    );
    assert!(close(l, 0.2014133), "{l}");
    assert_eq!((c[0], r[0]), (1.0, -0.5));
    let (l, _, _) = run(
        PreferenceLoss::Sigmoid {
            beta: 0.5,
            label_smoothing: 0.2,
        },
        &[-10.0],
        &[-20.0],
        &[-12.0],
        &[-19.0],
        &[1.0],
        &[1.0],
        None,
    );
    assert!(close(l, 0.5014133), "{l}");
}

#[test]
fn ipo_by_hand() {
    // (πc−rc)/|c| = 2/4 = 0.5, (πr−rr)/|r| = −1/2 = −0.5, h = 1; β = 0.25 -> 1/(2β) = 2
    // L = (1 − 2)² = 1; rewards 0.25·0.5 = 0.125, 0.25·−0.5 = −0.125
    let (l, c, r) = run(
        PreferenceLoss::Ipo { beta: 0.25 },
        &[-10.0],
        &[-20.0],
        &[-12.0],
        &[-19.0],
        &[4.0],
        &[2.0],
        None,
    );
    assert!(close(l, 1.0), "{l}");
    assert_eq!((c[0], r[0]), (0.125, -0.125));
}

#[test]
fn hinge_by_hand() {
    // margin 2 − (−1) = 3; β = 0.1: 1 − 0.3 = 0.7. β = 0.5: 1 − 1.5 < 0 -> 0. Mean of both pairs = 0.35
    let (l, _, _) = run(
        PreferenceLoss::Hinge { beta: 0.1 },
        &[-10.0, -10.0],
        &[-20.0, -20.0],
        &[-12.0, -12.0],
        &[-19.0, -19.0],
        &[1.0, 1.0],
        &[1.0, 1.0],
        None,
    );
    assert!(close(l, 0.7), "{l}");
    let (l, _, _) = run(
        PreferenceLoss::Hinge { beta: 0.5 },
        &[-10.0],
        &[-20.0],
        &[-12.0],
        &[-19.0],
        &[1.0],
        &[1.0],
        None,
    );
    assert_eq!(l, 0.0);
}

#[test]
fn simpo_by_hand() {
    // β·πc/|c| = 2·(−10/5) = −4, β·πr/|r| = 2·(−20/4) = −10, γ = 1: x = −4 + 10 − 1 = 5
    // L = log(1 + e^−5) = 0.0067153
    let (l, c, r) = run(
        PreferenceLoss::Simpo {
            beta: 2.0,
            gamma: 1.0,
        },
        &[-10.0],
        &[-20.0],
        &[0.0],
        &[0.0],
        &[5.0],
        &[4.0],
        None,
    );
    assert!(close(l, 0.0067153), "{l}");
    assert_eq!((c[0], r[0]), (-4.0, -10.0));
}

#[test]
fn orpo_by_hand() {
    // a_c = −2/2 = −1, a_r = −6/3 = −2
    // odds_c = −1 − log(1 − e^−1) = −1 − log(0.6321206) = −1 + 0.4586751 = −0.5413249
    // odds_r = −2 − log(1 − e^−2) = −2 − log(0.8646647) = −2 + 0.1454135 = −1.8545865
    // x = 1.3132616; −log σ(x) = log(1 + e^−1.3132616) = log(1.2689414) = 0.2381660
    // NLL = 2/2 = 1; λ = 0.5: L = 1 + 0.5·0.2381660 = 1.1190830
    let (l, _, _) = run(
        PreferenceLoss::Orpo { lambda: 0.5 },
        &[-2.0],
        &[-6.0],
        &[0.0],
        &[0.0],
        &[2.0],
        &[3.0],
        None,
    );
    assert!(close(l, 1.1190830), "{l}");
}

#[test]
fn rpo_adds_chosen_nll() {
    // step 0 sigmoid: ln 2; NLL = (10 + 30) / (4 + 6) = 4; α = 0.5 -> ln 2 + 2
    let (l, _, _) = run(
        PreferenceLoss::Sigmoid {
            beta: 0.1,
            label_smoothing: 0.0,
        },
        &[-10.0, -30.0],
        &[-5.0, -5.0],
        &[-10.0, -30.0],
        &[-5.0, -5.0],
        &[4.0, 6.0],
        &[1.0, 1.0],
        Some(0.5),
    );
    assert!(close(l, std::f64::consts::LN_2 + 2.0), "{l}");
}

#[test]
fn log_sigmoid_is_stable_and_differentiable() {
    let x = Var::new(&[-100f32, -1.0, 0.0, 1.0, 100.0], &Device::Cpu).unwrap();
    let y = log_sigmoid(x.as_tensor()).unwrap();
    let v = y.to_vec1::<f32>().unwrap();
    assert!(
        close(v[0] as f64, -100.0)
            && close(v[2] as f64, -std::f64::consts::LN_2)
            && v[4].abs() < 1e-6
    );
    let g = y.sum_all().unwrap().backward().unwrap();
    let g = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
    // d/dx log σ(x) = 1 − σ(x) = σ(−x)
    let want = [1.0, 0.7310586, 0.5, 0.2689414, 0.0];
    for (a, b) in g.iter().zip(want) {
        assert!((a - b).abs() < 1e-5, "{g:?}");
    }
}
