//! Invariants of the forward that need no oracle, on tiny synthetic models of every architecture
//! written by `dpo_lora::synth` (fixed seeds): batching and padding do not change log-probs, the
//! sliding window hides what it should, and a gradient reaches an adapter in every layer (the
//! guard against candle ops that silently drop gradients).

mod common;

use candle_core::quantized::GgmlDType;
use candle_core::DType;
use candle_core::{Device, Tensor, Var};
use dpo_lora::gguf::GgufFile;
use dpo_lora::model::backend::cpu_kernel_entries;
use dpo_lora::model::{Adapters, Execution, Keep, Lora, LoraLinear, Model, Scored, Target};
use dpo_lora::synth::{uniform_values, SynthArch, SynthSpec};

use common::{all_close, lora_on_every_target, max_abs, max_abs_diff};

const ARCHS: [SynthArch; 4] = [
    SynthArch::Llama,
    SynthArch::Qwen2,
    SynthArch::Qwen3,
    SynthArch::Gemma3,
];

/// `spec` written and loaded with our CPU kernels (f32).
fn load(spec: &SynthSpec) -> (tempfile::TempDir, Model) {
    load_as(spec, &Execution::cpu())
}

/// `spec` written and loaded as `exec` says.
fn load_as(spec: &SynthSpec, exec: &Execution) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    spec.write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let m = Model::load(&f, exec).unwrap();
    (dir, m)
}

/// The Candle backend in f32 on the CPU: the ops a GPU runs, where they can be compared.
fn candle_f32() -> Execution {
    Execution::candle_on_cpu(DType::F32)
}

fn seq(n: usize, seed: u32, vocab: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed * 97) >> 7) % vocab as u32)
        .collect()
}

/// Every LoRA gradient, A then B per adapted linear, flattened.
fn lora_grads(lora: &Lora, grads: &candle_core::backprop::GradStore) -> Vec<f32> {
    lora.vars()
        .iter()
        .flat_map(|v| {
            grads
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn sc(ids: &[u32], score_from: usize) -> Scored<'_> {
    Scored { ids, score_from }
}

#[test]
fn batch_of_two_equals_two_batches_of_one() {
    for arch in ARCHS {
        let (_d, m) = load(&SynthSpec::tiny(arch));
        let v = m.config.vocab;
        let (a, b) = (seq(13, 1, v), seq(7, 2, v));
        let both = m
            .sequence_logps(
                &[
                    Scored {
                        ids: &a,
                        score_from: 3,
                    },
                    Scored {
                        ids: &b,
                        score_from: 2,
                    },
                ],
                Adapters::Off,
            )
            .unwrap();
        let one_a = m
            .sequence_logps(
                &[Scored {
                    ids: &a,
                    score_from: 3,
                }],
                Adapters::Off,
            )
            .unwrap();
        let one_b = m
            .sequence_logps(
                &[Scored {
                    ids: &b,
                    score_from: 2,
                }],
                Adapters::Off,
            )
            .unwrap();
        let both = both.tokens.to_vec1::<f32>().unwrap();
        let mut sep = one_a.tokens.to_vec1::<f32>().unwrap();
        sep.extend(one_b.tokens.to_vec1::<f32>().unwrap());
        assert!(
            all_close(&both, &sep, 1e-5),
            "{arch:?}: batched {both:?} vs separate {sep:?}"
        );
    }
}

#[test]
fn padding_does_not_change_real_tokens() {
    for arch in ARCHS {
        let (_d, m) = load(&SynthSpec::tiny(arch));
        let v = m.config.vocab;
        let real = seq(9, 3, v);
        let mut padded = real.clone();
        padded.extend(seq(6, 4, v)); // junk after the real length
        let h_real = m.forward_hidden(&real, &[9], 9, Adapters::Off).unwrap();
        let h_pad = m
            .forward_hidden(&padded, &[9], 15, Adapters::Off)
            .unwrap()
            .narrow(1, 0, 9)
            .unwrap();
        let a = h_real.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = h_pad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(
            all_close(&a, &b, 1e-5),
            "{arch:?}: padding changed real positions"
        );
    }
}

#[test]
fn sliding_window_hides_tokens_beyond_its_reach() {
    // Every layer sliding (window 4, 2 layers): position p sees tokens back to p - 6 at most.
    let mut spec = SynthSpec::tiny(SynthArch::Gemma3);
    spec.sliding_window = 4;
    spec.gemma3_global_every = 1000;
    let (_d, m) = load(&spec);
    let v = m.config.vocab;
    let a = seq(12, 5, v);
    let mut b = a.clone();
    b[0] = (b[0] + 1) % v as u32;
    let ha = m.forward_hidden(&a, &[12], 12, Adapters::Off).unwrap();
    let hb = m.forward_hidden(&b, &[12], 12, Adapters::Off).unwrap();
    let diff = |p: usize| -> f32 {
        let x = ha.narrow(1, p, 1).unwrap();
        let y = hb.narrow(1, p, 1).unwrap();
        (x - y)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert!(diff(1) > 0.0, "a nearby position must see the change");
    for p in 7..12 {
        assert_eq!(
            diff(p),
            0.0,
            "position {p} is beyond the window but changed"
        );
    }
    // The same model with global layers does see it.
    let mut spec_g = spec.clone();
    spec_g.gemma3_global_every = 1;
    let (_d2, mg) = load(&spec_g);
    let ga = mg
        .forward_hidden(&a, &[12], 12, Adapters::Off)
        .unwrap()
        .narrow(1, 11, 1)
        .unwrap();
    let gb = mg
        .forward_hidden(&b, &[12], 12, Adapters::Off)
        .unwrap()
        .narrow(1, 11, 1)
        .unwrap();
    assert!(
        (ga - gb)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
}

/// Adapters on every target of every layer, B non-zero so A's gradient is non-zero too.
fn full_lora(m: &Model, rank: usize) -> Lora {
    let mut lora = lora_on_every_target(m, rank, 2.0 * rank as f64, false, 0);
    let dev = Device::Cpu;
    for il in 0..m.config.n_layer {
        for (ti, t) in Target::ALL.into_iter().enumerate() {
            let lin = m.linear(il, t);
            let (i, o) = (lin.in_features(), lin.out_features());
            let seed = (il * 16 + ti) as u64;
            let a = Var::from_tensor(
                &Tensor::from_vec(uniform_values(rank * i, seed, 0.2), (rank, i), &dev).unwrap(),
            )
            .unwrap();
            let b = Var::from_tensor(
                &Tensor::from_vec(uniform_values(o * rank, seed + 1000, 0.2), (o, rank), &dev)
                    .unwrap(),
            )
            .unwrap();
            lora.layers.insert((il, t), LoraLinear { a, b, scale: 2.0 });
        }
    }
    lora
}

#[test]
fn gradient_reaches_every_adapter_in_every_layer() {
    for arch in ARCHS {
        // F32 tied, and a K-quant with a separate (untied) output matrix.
        for (wt, tied) in [(GgmlDType::F32, true), (GgmlDType::Q4K, false)] {
            let mut spec = SynthSpec::tiny(arch);
            spec.weight_type = wt;
            spec.tied = tied;
            let (_d, m) = load(&spec);
            let lora = full_lora(&m, 4);
            let v = m.config.vocab;
            let (a, b) = (seq(10, 6, v), seq(8, 7, v));
            let out = m
                .sequence_logps(
                    &[
                        Scored {
                            ids: &a,
                            score_from: 4,
                        },
                        Scored {
                            ids: &b,
                            score_from: 4,
                        },
                    ],
                    Adapters::Train(&lora, 0),
                )
                .unwrap();
            let loss = (out.sums.get(0).unwrap() - out.sums.get(1).unwrap()).unwrap();
            let grads = loss.backward().unwrap();
            for ((il, t), l) in &lora.layers {
                for (name, var) in [("A", &l.a), ("B", &l.b)] {
                    let g = grads.get(var.as_tensor()).unwrap_or_else(|| {
                        panic!("{arch:?} {wt:?} layer {il} {t:?} {name}: no gradient")
                    });
                    let n = g
                        .sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(
                        n.is_finite() && n > 0.0,
                        "{arch:?} {wt:?} layer {il} {t:?} {name}: gradient norm² {n}"
                    );
                }
            }
        }
    }
}

#[test]
fn adapters_change_the_policy() {
    let (_d, m) = load(&SynthSpec::tiny(SynthArch::Llama));
    let lora = full_lora(&m, 2);
    let s = seq(8, 9, m.config.vocab);
    let x = [Scored {
        ids: &s,
        score_from: 2,
    }];
    let off = m
        .sequence_logps(&x, Adapters::Off)
        .unwrap()
        .tokens
        .to_vec1::<f32>()
        .unwrap();
    let on = m
        .sequence_logps(&x, Adapters::On(&lora))
        .unwrap()
        .tokens
        .to_vec1::<f32>()
        .unwrap();
    assert_ne!(on, off);
}

/// The Candle backend (candle's device-generic ops: what CUDA and Metal run) forced on the CPU
/// gives the CPU kernels' log-probs (within 1e-4) and LoRA gradients (within 1e-3 of the
/// largest), on every architecture, F32 tied and Q4_K untied: adapters off, and adapters on in
/// training with some absent (k_proj everywhere, all of layer 1), through packed pairs (prefix
/// sharing) and checkpointed blocks. And it enters none of our CPU kernels: the per-thread count
/// of kernel entries does not move while it runs, and does while the kernels run.
#[test]
fn candle_backend_on_the_cpu_matches_the_cpu_kernels() {
    for arch in ARCHS {
        for (wt, tied) in [(GgmlDType::F32, true), (GgmlDType::Q4K, false)] {
            let mut spec = SynthSpec::tiny(arch);
            spec.weight_type = wt;
            spec.tied = tied;
            let (_d, kernels) = load(&spec);
            let (_d2, candle) = load_as(&spec, &candle_f32());
            assert!(kernels.checkpointing() && candle.checkpointing());
            let mut lora = full_lora(&kernels, 4);
            lora.layers
                .retain(|&(il, t), _| il != 1 && t != Target::KProj);
            let v = kernels.config.vocab;
            let prompt = seq(5, 21, v);
            let with = |tail: &[u32]| [prompt.as_slice(), tail].concat();
            let (c0, r0) = (with(&seq(6, 22, v)), with(&seq(4, 23, v)));
            let (c1, r1) = (seq(8, 24, v), seq(5, 25, v));
            let pairs = [(sc(&c0, 5), sc(&r0, 5)), (sc(&c1, 2), sc(&r1, 3))];
            let run = |m: &Model| {
                let off = m.pair_logps(&pairs, Adapters::Off).unwrap();
                let out = m.pair_logps(&pairs, Adapters::Train(&lora, 0)).unwrap();
                let w = Tensor::new(&[0.7f32, -1.0, 0.4, 1.2], &Device::Cpu).unwrap();
                let grads = (&out.sums * &w)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let sums = |o: &dpo_lora::model::SeqLogps| o.tokens.to_vec1::<f32>().unwrap();
                (sums(&off), sums(&out), lora_grads(&lora, &grads))
            };
            let before = cpu_kernel_entries();
            let (off_c, on_c, g_c) = run(&candle);
            assert_eq!(
                cpu_kernel_entries(),
                before,
                "{arch:?} {wt:?}: a CPU kernel ran on the Candle backend"
            );
            let (off_k, on_k, g_k) = run(&kernels);
            assert!(
                cpu_kernel_entries() > before,
                "the CPU kernels count their entries"
            );
            for (what, c, k) in [
                ("adapters off", &off_c, &off_k),
                ("adapters on", &on_c, &on_k),
            ] {
                assert!(
                    all_close(c, k, 1e-4),
                    "{arch:?} {wt:?} {what}: per-token log-probs {c:?} vs {k:?}"
                );
            }
            let (worst, gmax) = (max_abs_diff(&g_k, &g_c), max_abs(&g_k));
            assert!(
                gmax > 0.0 && worst <= 1e-3 * gmax,
                "{arch:?} {wt:?}: gradient off by {worst} of {gmax}"
            );
        }
    }
}

/// bf16 compute (what a GPU runs) on the Candle backend, forced on the CPU: within 0.15% of the
/// f32 sum (norm and softmax statistics and the LoRA addition in f32: 0.014-0.083% here; with
/// them in bf16 it was 0.07-0.49%), with f32 log-probs and finite f32 LoRA gradients; the CPU
/// kernels refuse it.
#[test]
fn bf16_compute_on_the_candle_backend_tracks_f32() {
    for arch in ARCHS {
        let spec = SynthSpec::tiny(arch);
        let (_d, kernels) = load(&spec);
        let path = _d.path().join("m.gguf");
        let refused = Execution {
            dtype: DType::BF16,
            ..Execution::cpu()
        };
        assert!(Model::load(&GgufFile::open(&path).unwrap(), &refused).is_err());
        let (_d2, half) = load_as(&spec, &Execution::candle_on_cpu(DType::BF16));
        let lora = full_lora(&kernels, 4);
        let v = kernels.config.vocab;
        let a = seq(12, 9, v);
        let seqs = [Scored {
            ids: &a,
            score_from: 4,
        }];
        let f32_sum = kernels
            .sequence_logps(&seqs, Adapters::On(&lora))
            .unwrap()
            .sums
            .to_vec1::<f32>()
            .unwrap()[0];
        let out = half
            .sequence_logps(&seqs, Adapters::Train(&lora, 0))
            .unwrap();
        assert_eq!(out.sums.dtype(), candle_core::DType::F32);
        let bf16_sum = out.sums.to_vec1::<f32>().unwrap()[0];
        eprintln!(
            "{arch:?}: bf16 {bf16_sum} vs f32 {f32_sum}: {:.3}%",
            100.0 * (bf16_sum - f32_sum).abs() / f32_sum.abs()
        );
        assert!(
            (bf16_sum - f32_sum).abs() < 1.5e-3 * f32_sum.abs().max(1.0),
            "{arch:?}: bf16 {bf16_sum} vs f32 {f32_sum}"
        );
        let grads = out.sums.sum_all().unwrap().backward().unwrap();
        for var in lora.vars() {
            let g = grads.get(var.as_tensor()).expect("gradient");
            assert_eq!(g.dtype(), candle_core::DType::F32);
            let n = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(n.is_finite() && n > 0.0, "{arch:?}: gradient norm² {n}");
        }
    }
}

/// Gradient checkpointing (the default for training forwards) recomputes each block in the
/// backward: the log-probs must be the same bits and the LoRA gradients the same up to summation
/// order as a forward that keeps everything, with dropout on (the recompute must draw the same
/// masks), on the CPU kernels and the Candle backend, at every keep level (block input only,
/// + gate/up, + o/down), with adapters missing from some linears and from a whole layer.
#[test]
fn gradient_checkpointing_keeps_values_and_gradients() {
    for arch in ARCHS {
        for (wt, tied, generic) in [
            (GgmlDType::F32, true, false),
            (GgmlDType::Q4K, false, false),
            (GgmlDType::Q8_0, true, true),
        ] {
            let mut spec = SynthSpec::tiny(arch);
            spec.weight_type = wt;
            spec.tied = tied;
            let exec = if generic {
                candle_f32()
            } else {
                Execution::cpu()
            };
            let (_d, mut m) = load_as(&spec, &exec);
            assert!(m.checkpointing(), "checkpointing is the default");
            let mut lora = full_lora(&m, 4);
            lora.config.dropout = 0.25;
            lora.layers
                .retain(|&(il, t), _| il != 1 && t != Target::KProj);
            let v = m.config.vocab;
            let (a, b) = (seq(11, 5, v), seq(9, 8, v));
            let seqs = [
                Scored {
                    ids: &a,
                    score_from: 3,
                },
                Scored {
                    ids: &b,
                    score_from: 6,
                },
            ];
            let run = |m: &Model, seed: u64| {
                let out = m
                    .sequence_logps(&seqs, Adapters::Train(&lora, seed))
                    .unwrap();
                let sums = out.sums.to_vec1::<f32>().unwrap();
                let loss = (out.sums.get(0).unwrap() * 0.6 - out.sums.get(1).unwrap()).unwrap();
                let grads = loss.backward().unwrap();
                let g = lora_grads(&lora, &grads);
                (sums, g)
            };
            assert_eq!(
                m.checkpoint_keep(),
                Keep::Projections,
                "the default keep level"
            );
            m.set_checkpointing(false);
            let (s_full, g_full) = run(&m, 7);
            // dropout is live: another seed gives other log-probs
            assert_ne!(
                run(&m, 8).0,
                s_full,
                "{arch:?} {wt:?}: dropout had no effect"
            );
            m.set_checkpointing(true);
            for keep in [Keep::None, Keep::Mlp, Keep::Projections] {
                m.set_checkpoint_keep(keep);
                let (s_ck, g_ck) = run(&m, 7);
                let what = format!("{arch:?} {wt:?} candle={generic} keep={keep:?}");
                assert_eq!(s_ck, s_full, "{what}: log-probs");
                let (worst, gmax) = (max_abs_diff(&g_full, &g_ck), max_abs(&g_full));
                assert!(
                    gmax > 0.0 && worst <= 1e-5 * gmax,
                    "{what}: gradient off by {worst} of {gmax}"
                );
            }
        }
    }
}

/// Prefix sharing: a pair packed into one row (prompt once, each completion hidden from the
/// other, positions restarting after the prompt) scores and differentiates like the two
/// sequences run separately: pairs of unequal lengths (padding), a pair with no common prefix,
/// one whose completions share their first tokens, gemma3's sliding window shorter than the
/// sequences, CPU kernels and the device path.
#[test]
fn packed_pairs_match_separate_sequences() {
    for arch in ARCHS {
        for generic in [false, true] {
            let exec = if generic {
                candle_f32()
            } else {
                Execution::cpu()
            };
            let (_d, m) = load_as(&SynthSpec::tiny(arch), &exec);
            let lora = full_lora(&m, 4);
            let v = m.config.vocab;
            let prompt = seq(6, 11, v);
            let with = |tail: &[u32]| [prompt.as_slice(), tail].concat();
            let (c0, r0) = (with(&seq(5, 12, v)), with(&seq(8, 13, v)));
            let shared_start = seq(3, 14, v);
            let (c1, r1) = (
                [with(&shared_start), seq(4, 15, v)].concat(),
                [with(&shared_start), seq(2, 16, v)].concat(),
            );
            let (c2, r2) = (seq(7, 17, v), seq(9, 18, v));
            let pairs = [
                (sc(&c0, 6), sc(&r0, 6)),
                (sc(&c1, 6), sc(&r1, 6)),
                (sc(&c2, 2), sc(&r2, 3)),
            ];
            assert_ne!(c2[0], r2[0], "the third pair shares nothing");
            let flat: Vec<Scored> = pairs
                .iter()
                .map(|p| p.0)
                .chain(pairs.iter().map(|p| p.1))
                .collect();
            let run = |packed: bool| {
                let out = if packed {
                    m.pair_logps(&pairs, Adapters::Train(&lora, 3)).unwrap()
                } else {
                    m.sequence_logps(&flat, Adapters::Train(&lora, 3)).unwrap()
                };
                let w = Tensor::new(&[0.3f32, -1.0, 0.7, 1.1, -0.4, 0.9], &Device::Cpu).unwrap();
                let loss = (&out.sums * &w).unwrap().sum_all().unwrap();
                let grads = loss.backward().unwrap();
                let g = lora_grads(&lora, &grads);
                (out.tokens.to_vec1::<f32>().unwrap(), g)
            };
            let (t_sep, g_sep) = run(false);
            let (t_pack, g_pack) = run(true);
            assert!(
                all_close(&t_pack, &t_sep, 1e-5),
                "{arch:?} candle={generic}: per-token log-probs {t_pack:?} vs {t_sep:?}"
            );
            let (worst, gmax) = (max_abs_diff(&g_sep, &g_pack), max_abs(&g_sep));
            assert!(
                gmax > 0.0 && worst <= 1e-5 * gmax,
                "{arch:?} candle={generic}: gradient off by {worst} of {gmax}"
            );
        }
    }
}
