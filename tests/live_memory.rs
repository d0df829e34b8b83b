//! Live memory of one DPO step on the Candle backend (the ops a GPU runs), counted on the CPU by
//! a global allocator, over an 8B-shaped stack: Llama 3 8B's hidden 4096, ffn 14336, 32 query /
//! 8 kv heads of 128, two layers, Q4_K weights.
//!
//! The promise it guards: the base stays quantized in memory; a frozen linear's dequantized
//! weight lives only as long as its product (forward or backward), and no weight gradient of a
//! frozen weight is formed. So during a step the live bytes stay within what was resident before
//! it (quantized weights, LoRA, optimizer state) plus the activations plus two of the largest
//! dequantized matrices. A graph that kept each dequantized W until the backward (a plain
//! `x.matmul(W.t())`) needs every layer's seven matrices at once and fails here.
//!
//! A test binary of its own: the allocator counts every thread of the process, so nothing else
//! may run beside it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::quantized::GgmlDType;
use candle_core::DType;
use dpo_lora::data::batch::TrainPair;
use dpo_lora::data::encode::EncodedSide;
use dpo_lora::gguf::GgufFile;
use dpo_lora::loss::PreferenceLoss;
use dpo_lora::model::{Execution, Model};
use dpo_lora::synth::{SynthArch, SynthSpec};
use dpo_lora::train::{self, optim::AdamW, RefVals};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            grew(new);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MIB: f64 = (1 << 20) as f64;

fn spec_8b_shaped() -> SynthSpec {
    let mut s = SynthSpec::tiny(SynthArch::Llama);
    s.hidden = 4096;
    s.ffn = 14336;
    s.n_head = 32;
    s.n_kv_head = 8;
    s.head_dim = 128;
    s.n_layer = 2;
    s.weight_type = GgmlDType::Q4K;
    s
}

#[test]
fn a_candle_step_keeps_at_most_two_dequantized_matrices_alive() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_8b_shaped();
    let path = dir.path().join("8b-shaped.gguf");
    spec.write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let mut model = Model::load(&f, &Execution::candle_on_cpu(DType::F32)).unwrap();
    drop(f);
    let (h, ffn, nl) = (spec.hidden, spec.ffn, spec.n_layer);
    let lora = common::lora_on_every_target(&model, 8, 16.0, false, 1);
    common::randomize_b(&lora, 7, 0.01);
    let vars = lora.vars();
    let _opt = AdamW::new(&vars, 0.0).unwrap();
    let lora_bytes: usize = vars.iter().map(|v| v.as_tensor().elem_count() * 4).sum();
    let side = |n: usize, prompt: usize, k: u32| EncodedSide {
        ids: (0..n as u32).map(|i| (i * k + 3) % 200).collect(),
        prompt_len: prompt,
    };
    // Two pairs, a 12-token prompt and completions of 6 to 9 tokens: 2 packed rows of <= 30.
    let pairs: Vec<TrainPair> = [(18, 21), (20, 19)]
        .iter()
        .enumerate()
        .map(|(i, &(c, r))| TrainPair {
            index: i,
            chosen: side(c, 12, 5 + i as u32),
            rejected: side(r, 12, 11 + i as u32),
        })
        .collect();
    let pairs: Vec<&TrainPair> = pairs.iter().collect();
    let (b, t) = (pairs.len(), 12 + 9 + 9);
    let rows = b * t;
    let loss = PreferenceLoss::Sigmoid {
        beta: 0.1,
        label_smoothing: 0.0,
    };

    // The bound, in bytes (f32 activations, `rows` packed tokens):
    // - the largest dequantized matrix is gate/up/down, ffn x hidden f32; two of them;
    // - one block's activations: its input and output, the normed inputs, q/k/v and the
    //   rotated q/k, the attention output, o, gate, up, their product and down (about
    //   12 hidden-wide and 6 ffn-wide rows per token with their gradients), and the attention
    //   scores and probabilities with their gradients (4 of (b, n_head, t, t));
    // - kept between a checkpointed block's two runs, for every layer: its input and the o,
    //   gate, up and down outputs; without checkpointing, every block's activations;
    // - the LoRA gradients.
    let dequant = ffn * h * 4;
    let block = rows * (12 * h + 6 * ffn) * 4 + 4 * b * spec.n_head * t * t * 4;
    let kept = nl * rows * (3 * h + 2 * ffn) * 4;
    let quantized = model.size_in_bytes();
    for checkpointing in [true, false] {
        model.set_checkpointing(checkpointing);
        let activations = if checkpointing {
            block + kept
        } else {
            nl * block
        };
        let bound = 2 * dequant + activations + lora_bytes;
        let before = LIVE.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        let (out, grads) = train::step_backward(
            &model,
            &loss,
            None,
            &pairs,
            (&lora, 1),
            RefVals::Given(vec![(-40.0, -41.0), (-39.0, -42.0)]),
            &vars,
            1.0,
        )
        .unwrap();
        assert!(out.loss.is_finite());
        assert!(
            grads.iter().all(|g| g.is_some()),
            "every adapter gets a gradient"
        );
        drop(grads);
        let peak = PEAK.load(Ordering::SeqCst) - before;
        eprintln!(
            "checkpointing {checkpointing}: resident before the step {:.0} MiB (quantized \
             weights {:.0} MiB, LoRA {:.1} MiB x 3 with the optimizer state); peak above it \
             {:.0} MiB; bound {:.0} MiB = 2 x {:.0} MiB dequantized + {:.0} MiB activations + \
             {:.1} MiB LoRA gradients",
            before as f64 / MIB,
            quantized as f64 / MIB,
            lora_bytes as f64 / MIB,
            peak as f64 / MIB,
            bound as f64 / MIB,
            dequant as f64 / MIB,
            activations as f64 / MIB,
            lora_bytes as f64 / MIB,
        );
        // What stays resident is the quantized base and the adapters, nothing dequantized.
        assert!(
            before < quantized + 3 * lora_bytes + dequant / 2,
            "resident before the step: {before} bytes for {quantized} quantized"
        );
        assert!(
            peak <= bound,
            "checkpointing {checkpointing}: the step's live bytes rose {:.0} MiB above what was \
             resident, over the bound of {:.0} MiB",
            peak as f64 / MIB,
            bound as f64 / MIB
        );
    }
}
