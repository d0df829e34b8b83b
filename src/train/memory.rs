//! What a training run will hold in memory, planned from the recipe and the GGUF header before
//! anything big is loaded (`dpo-lora plan`, the first lines of `dpo-lora run`, and
//! `train.checkpoint_keep: auto`).
//!
//! Owns: [`Plan`] (the predicted peak, part by part), the choice of keep level under `auto` (the
//! fastest that fits), and the changes that would make a plan fit. Does not: measure (see
//! `dpo-lora bench`, whose peak RSS the plan is checked against) or allocate; a wrong guess costs
//! speed (`none` recomputes more) or memory, never correctness: every level gives the same numbers
//! (`cargo test --test model gradient_checkpointing`).
//!
//! The model, per micro-batch of `b` pairs whose packed rows are at most `t` tokens (prompt once,
//! two completions: `2 · max_length` before the data is read, the longest pair after;
//! activations in the compute dtype, `a` bytes):
//! ```text
//! weights      the GGUF's tensors as stored (vectors f32)
//! lora state   A, B, their gradients, AdamW's two moments: 4 f32 per adapter value
//! kept         per pair and layer: t · (hidden + the keep level's outputs) · a      (checkpointing)
//!              per pair and layer: t · block_floats · a + heads · t² · 4            (without)
//! one block    what a block's forward and backward hold at once, per pair in flight
//! head         the log-prob head's dequantized block and logits block, per pair in flight
//! runtime      the process, its threads, the tokenizer and the data
//! ```
//! Pairs in flight: on the CPU kernels every pair of a micro-batch keeps its graph until its
//! backward and up to one pair per core runs at once; on the Candle backend (GPU) one pair's
//! graph lives at a time (see `pairwise`).

use anyhow::Result;
use serde::Serialize;

use crate::gguf::GgufFile;
use crate::model::{Config, Keep, Target};
use crate::recipe::{CheckpointKeep, Recipe};

const MIB: f64 = (1 << 20) as f64;

/// Memory of the process besides the model: the binary, its threads' stacks, allocator arenas,
/// the data. An allowance, not a measurement of its own: `dpo-lora score` on the tiny test model
/// peaks at 19 MiB in all.
const RUNTIME_BYTES: f64 = 40.0 * MIB;
/// Per vocabulary entry: the token string, its map entries and merge ranks. An estimate: a
/// 1-layer Qwen2.5-0.5B-shaped file scored at 151,936 tokens peaks 185 MiB above the same at
/// 1,024, of which 89 MiB are weights and ~32 MiB the head's blocks, which leaves ~430 bytes per
/// token; the totals are checked against measured runs instead (docs/memory-plan.md).
const TOKENIZER_BYTES_PER_TOKEN: f64 = 150.0;
/// The head's two working blocks (logits, dequantized rows), `ops::head::MAX_LOGITS` floats each.
const HEAD_BLOCK_FLOATS: f64 = (4 << 20) as f64;

/// How the step runs, as far as memory is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compute {
    /// The CPU kernels, f32, up to `threads` pairs at once, every pair's graph alive.
    CpuKernels { threads: usize },
    /// The Candle backend (a GPU, or the CPU in tests): activations of `act_bytes`, one pair's
    /// graph at a time.
    Candle { act_bytes: usize },
}

impl Compute {
    pub fn of(exec: &crate::model::Execution) -> Self {
        match exec.backend {
            crate::model::Backend::CpuKernels => Compute::CpuKernels {
                threads: rayon::current_num_threads(),
            },
            crate::model::Backend::Candle => Compute::Candle {
                act_bytes: exec.dtype.size_in_bytes(),
            },
        }
    }

    /// A GPU in bf16: what `plan` shows beside the CPU.
    pub const GPU_BF16: Compute = Compute::Candle { act_bytes: 2 };
}

/// One line of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub what: &'static str,
    pub bytes: u64,
    pub detail: String,
}

/// The predicted peak of a run, part by part.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub target: Compute,
    /// The keep level this plan assumes (checkpointing on).
    pub keep: Option<KeepName>,
    pub parts: Vec<Part>,
    pub predicted_peak_bytes: u64,
}

/// A keep level by its recipe name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepName {
    None,
    Mlp,
    Projections,
}

impl KeepName {
    pub fn keep(self) -> Keep {
        match self {
            KeepName::None => Keep::None,
            KeepName::Mlp => Keep::Mlp,
            KeepName::Projections => Keep::Projections,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            KeepName::None => "none",
            KeepName::Mlp => "mlp",
            KeepName::Projections => "projections",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::FASTEST_FIRST.into_iter().find(|k| k.name() == s)
    }
    /// Fastest first.
    pub const FASTEST_FIRST: [KeepName; 3] = [KeepName::Projections, KeepName::Mlp, KeepName::None];
}

/// What a plan is made from: the recipe's knobs, read once.
#[derive(Debug, Clone)]
pub struct Knobs {
    pub batch_size: usize,
    pub max_length: usize,
    /// The longest packed pair (prompt + both completions) of the data, once it is read; before,
    /// the bound `2 · max_length`.
    pub longest_pair: Option<usize>,
    /// The most packed tokens one micro-batch holds, where the batches are known in advance (the
    /// bench: its steps take the pairs in order); otherwise `batch_size` times the longest pair.
    pub longest_batch: Option<usize>,
    pub gradient_checkpointing: bool,
    pub rank: usize,
    pub targets: Vec<Target>,
}

impl Knobs {
    pub fn of(r: &Recipe) -> Self {
        Self {
            batch_size: r.train.batch_size,
            max_length: r.data.max_length,
            longest_pair: None,
            longest_batch: None,
            gradient_checkpointing: r.train.gradient_checkpointing,
            rank: r.lora.rank,
            targets: r.lora.target_modules.clone(),
        }
    }
}

/// The plan of `knobs` on the model in `f`, at keep level `keep` (ignored without checkpointing).
pub fn plan(f: &GgufFile, c: &Config, knobs: &Knobs, target: Compute, keep: KeepName) -> Plan {
    let (a, in_flight, graphs) = match target {
        Compute::CpuKernels { threads } => (
            4.0,
            knobs.batch_size.min(threads.max(1)) as f64,
            knobs.batch_size as f64,
        ),
        Compute::Candle { act_bytes } => (act_bytes as f64, 1.0, 1.0),
    };
    let t = knobs.longest_pair.unwrap_or(2 * knobs.max_length) as f64;
    // Tokens whose graphs are alive at once: the whole micro-batch on the CPU kernels, one pair on
    // the Candle backend.
    let alive = match (target, knobs.longest_batch) {
        (Compute::CpuKernels { .. }, Some(b)) => b as f64,
        _ => graphs * t,
    };
    let (h, ffn, layers) = (c.hidden as f64, c.ffn as f64, c.n_layer as f64);
    let q = (c.n_head * c.head_dim) as f64;
    let kv = (c.n_kv_head * c.head_dim) as f64;
    let heads = c.n_head as f64;

    let weights: u64 = f
        .content
        .tensor_infos
        .values()
        .map(|i| {
            let n = i.shape.elem_count();
            if i.shape.dims().len() == 1 {
                4 * n as u64
            } else {
                (n / i.ggml_dtype.block_size() * i.ggml_dtype.type_size()) as u64
            }
        })
        .sum();
    let lora_values: f64 = knobs
        .targets
        .iter()
        .map(|t| {
            let (i, o) = linear_dims(c, *t);
            (knobs.rank * (i + o)) as f64
        })
        .sum::<f64>()
        * layers;
    // A block's forward graph per token: two norms' outputs, q k v and their RoPE'd copies, the
    // attention output, o, two residual sums, gate, up, the activation, its product, down, and
    // the LoRA branches' rank-wide middles.
    let block_floats = 6.0 * h + 3.0 * q + 3.0 * kv + 5.0 * ffn + 14.0 * knobs.rank as f64;
    let attention = heads * t * t * 4.0 + t * t * 4.0;
    let (kept, kept_detail) = if knobs.gradient_checkpointing {
        let floats = h + keep.keep().floats_per_token(c.hidden, c.ffn) as f64;
        (
            layers * alive * floats * a,
            format!(
                "{} layers x {} tokens ({} pairs) x {} floats (block input + keep {})",
                c.n_layer,
                alive,
                graphs,
                floats,
                keep.name()
            ),
        )
    } else {
        (
            layers * (alive * block_floats * a + graphs * attention),
            format!(
                "{} layers x ({} tokens ({} pairs) x {} floats + {} x attention {:.0} MiB), no checkpointing",
                c.n_layer,
                alive,
                graphs,
                block_floats,
                graphs,
                attention / MIB
            ),
        )
    };
    // Forward values and their gradients of one block, and its attention probabilities.
    let block = in_flight * (2.0 * t * block_floats * a + attention);
    let head = in_flight * (2.0 * HEAD_BLOCK_FLOATS * 4.0 + 2.0 * t * h * 4.0);
    let runtime = RUNTIME_BYTES + TOKENIZER_BYTES_PER_TOKEN * c.vocab as f64;
    let parts = vec![
        Part {
            what: "weights",
            bytes: weights,
            detail: "quantized, as stored".into(),
        },
        Part {
            what: "lora state",
            bytes: (lora_values * 16.0) as u64,
            detail: format!(
                "{:.1} M adapter values x (value, gradient, 2 AdamW moments) f32",
                lora_values / 1e6
            ),
        },
        Part {
            what: "kept activations",
            bytes: kept as u64,
            detail: kept_detail,
        },
        Part {
            what: "one block",
            bytes: block as u64,
            detail: format!("{in_flight} pairs in flight"),
        },
        Part {
            what: "head",
            bytes: head as u64,
            detail: "log-prob head blocks".into(),
        },
        Part {
            what: "runtime",
            bytes: runtime as u64,
            detail: "process, tokenizer, data".into(),
        },
    ];
    let predicted_peak_bytes = parts.iter().map(|p| p.bytes).sum();
    Plan {
        target,
        keep: knobs.gradient_checkpointing.then_some(keep),
        parts,
        predicted_peak_bytes,
    }
}

/// The longest packed pair of `pairs`: the prompt once, then both completions (what a row of the
/// prefix-shared forward holds, the `t` of the plan).
pub fn longest_pair<'a>(pairs: impl Iterator<Item = &'a crate::data::batch::TrainPair>) -> usize {
    pairs.map(packed_len).max().unwrap_or(0)
}

/// The packed tokens of `pairs` together (a micro-batch's, for [`Knobs::longest_batch`]).
pub fn batch_tokens<'a>(pairs: impl Iterator<Item = &'a crate::data::batch::TrainPair>) -> usize {
    pairs.map(packed_len).sum()
}

fn packed_len(p: &crate::data::batch::TrainPair) -> usize {
    p.chosen.ids.len() + p.rejected.ids.len() - p.chosen.prompt_len
}

/// `(in, out)` of a linear from the config alone.
pub fn linear_dims(c: &Config, t: Target) -> (usize, usize) {
    let (h, q, kv) = (c.hidden, c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
    match t {
        Target::QProj => (h, q),
        Target::KProj | Target::VProj => (h, kv),
        Target::OProj => (q, h),
        Target::GateProj | Target::UpProj => (h, c.ffn),
        Target::DownProj => (c.ffn, h),
    }
}

/// The keep level for `choice`: a fixed one, or under `auto` the fastest whose plan fits
/// `available` (the most memory-frugal when none does, or when `available` is unknown... then
/// `mlp`, the middle).
pub fn choose_keep(
    choice: CheckpointKeep,
    f: &GgufFile,
    c: &Config,
    knobs: &Knobs,
    target: Compute,
    available: Option<u64>,
) -> (KeepName, String) {
    let fixed = |k: KeepName| (k, format!("checkpoint_keep: {}", k.name()));
    match choice {
        CheckpointKeep::None => fixed(KeepName::None),
        CheckpointKeep::Mlp => fixed(KeepName::Mlp),
        CheckpointKeep::Projections => fixed(KeepName::Projections),
        CheckpointKeep::Auto => {
            let Some(avail) = available else {
                return (
                    KeepName::Mlp,
                    "checkpoint_keep: auto -> mlp (the device's free memory is not known)".into(),
                );
            };
            let k = KeepName::FASTEST_FIRST
                .into_iter()
                .find(|&k| plan(f, c, knobs, target, k).predicted_peak_bytes <= avail)
                .unwrap_or(KeepName::None);
            let p = plan(f, c, knobs, target, k);
            (
                k,
                format!(
                    "checkpoint_keep: auto -> {} (predicted peak {:.0} MiB, {:.1} GiB available)",
                    k.name(),
                    p.predicted_peak_bytes as f64 / MIB,
                    avail as f64 / (1024.0 * MIB)
                ),
            )
        }
    }
}

/// Changes that would make a plan fit `limit`, each with its predicted peak: the keep level,
/// then halving the batch, then halving max_length (each alone, smallest change first).
pub fn suggestions(
    f: &GgufFile,
    c: &Config,
    knobs: &Knobs,
    target: Compute,
    limit: u64,
) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let peak = |k: &Knobs, keep| plan(f, c, k, target, keep).predicted_peak_bytes;
    if knobs.gradient_checkpointing {
        for k in KeepName::FASTEST_FIRST {
            let p = peak(knobs, k);
            if p <= limit {
                out.push((format!("train.checkpoint_keep={}", k.name()), p));
                break;
            }
        }
    } else {
        let on = Knobs {
            gradient_checkpointing: true,
            ..knobs.clone()
        };
        let p = peak(&on, KeepName::None);
        out.push(("train.gradient_checkpointing=true".into(), p));
    }
    let mut b = knobs.batch_size;
    while b > 1 {
        b /= 2;
        let k = Knobs {
            batch_size: b,
            longest_batch: None,
            gradient_checkpointing: true,
            ..knobs.clone()
        };
        let p = peak(&k, KeepName::None);
        if p <= limit {
            out.push((
                format!(
                    "train.batch_size={b} (train.grad_accum x{} keeps the step)",
                    knobs.batch_size / b
                ),
                p,
            ));
            break;
        }
    }
    let mut l = knobs.max_length;
    while l > 64 {
        l /= 2;
        let k = Knobs {
            max_length: l,
            longest_pair: None,
            longest_batch: None,
            gradient_checkpointing: true,
            ..knobs.clone()
        };
        let p = peak(&k, KeepName::None);
        if p <= limit {
            out.push((format!("data.max_length={l}"), p));
            break;
        }
    }
    out.retain(|(_, p)| *p <= limit);
    out
}

impl Plan {
    /// The same run holding a second loaded copy of the base as its reference (what `dpo-lora
    /// bench`'s `dpo-second-copy` measures against; `run` never does this).
    pub fn with_second_copy(mut self) -> Self {
        let weights = self
            .parts
            .iter()
            .find(|p| p.what == "weights")
            .map_or(0, |p| p.bytes);
        self.parts.push(Part {
            what: "second copy",
            bytes: weights,
            detail: "the base loaded again as the reference".into(),
        });
        self.predicted_peak_bytes += weights;
        self
    }

    /// The plan as lines for a person.
    pub fn lines(&self) -> Vec<String> {
        let what = match self.target {
            Compute::CpuKernels { threads } => format!("CPU kernels, f32, {threads} threads"),
            Compute::Candle { act_bytes: 2 } => "Candle backend (GPU), bf16".into(),
            Compute::Candle { act_bytes } => format!(
                "Candle backend, {} activations",
                if act_bytes == 4 { "f32" } else { "16-bit" }
            ),
        };
        let mut v = vec![format!(
            "memory plan ({what}{}): predicted peak {:.0} MiB",
            self.keep
                .map(|k| format!(", checkpoint_keep {}", k.name()))
                .unwrap_or_default(),
            self.predicted_peak_bytes as f64 / MIB
        )];
        for p in &self.parts {
            v.push(format!(
                "  {:<17} {:>8.0} MiB  {}",
                p.what,
                p.bytes as f64 / MIB,
                p.detail
            ));
        }
        v
    }
}

/// Read the GGUF header of the recipe's model (no tensor data) and its config.
pub fn open_header(r: &Recipe) -> Result<(GgufFile, Config)> {
    let f = crate::session::open_file(&r.model.path)?;
    let c = Config::from_gguf(&f)?;
    Ok((f, c))
}

/// A memory size as people write it: `8GB`, `7.5GiB`, `512MB`, `512MiB`, or bytes. GB and GiB
/// both mean 2^30 (what `free -g` and the RSS figures here count in).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: expected a size like 8GB, 512MiB or 1073741824"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => 1024.0 * MIB,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * MIB,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}`; use KB, MB, GB or TB"
            ))
        }
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("`{s}`: a size must be positive"));
    }
    Ok((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SynthArch, SynthSpec};

    /// Each knob moves the prediction the way memory moves: more pairs, longer rows, more kept
    /// outputs, no checkpointing, f32 over bf16, a higher rank: more.
    #[test]
    fn the_prediction_moves_with_each_knob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let mut spec = SynthSpec::tiny(SynthArch::Llama);
        spec.n_layer = 4;
        spec.write(&path).unwrap();
        let f = GgufFile::open(&path).unwrap();
        let c = Config::from_gguf(&f).unwrap();
        let base = Knobs {
            batch_size: 2,
            max_length: 256,
            longest_pair: None,
            longest_batch: None,
            gradient_checkpointing: true,
            rank: 8,
            targets: Target::ALL.to_vec(),
        };
        let cpu = Compute::CpuKernels { threads: 2 };
        let peak =
            |k: &Knobs, t: Compute, keep: KeepName| plan(&f, &c, k, t, keep).predicted_peak_bytes;
        let p0 = peak(&base, cpu, KeepName::Mlp);
        let more = |k: Knobs| peak(&k, cpu, KeepName::Mlp);
        assert!(
            more(Knobs {
                batch_size: 4,
                ..base.clone()
            }) > p0
        );
        assert!(
            more(Knobs {
                max_length: 512,
                ..base.clone()
            }) > p0
        );
        assert!(
            more(Knobs {
                longest_pair: Some(100),
                ..base.clone()
            }) < p0
        );
        // A known micro-batch shorter than batch_size x the longest pair: less.
        assert!(
            more(Knobs {
                longest_batch: Some(300),
                ..base.clone()
            }) < p0
        );
        assert!(
            more(Knobs {
                rank: 64,
                ..base.clone()
            }) > p0
        );
        assert!(
            more(Knobs {
                gradient_checkpointing: false,
                ..base.clone()
            }) > p0
        );
        assert!(peak(&base, cpu, KeepName::None) < p0);
        assert!(peak(&base, cpu, KeepName::Projections) > p0);
        assert!(peak(&base, Compute::GPU_BF16, KeepName::Mlp) < p0);
        // auto takes the fastest level that fits, and the most frugal when none does.
        let proj = peak(&base, cpu, KeepName::Projections);
        let choose = |m| choose_keep(CheckpointKeep::Auto, &f, &c, &base, cpu, Some(m)).0;
        assert_eq!(choose(proj), KeepName::Projections);
        assert_eq!(choose(proj - 1), KeepName::Mlp);
        assert_eq!(choose(1), KeepName::None);
        // Suggestions are each under the limit.
        let tight = peak(&base, cpu, KeepName::None) + 1;
        let s = suggestions(
            &f,
            &c,
            &Knobs {
                batch_size: 8,
                ..base.clone()
            },
            cpu,
            tight,
        );
        assert!(!s.is_empty() && s.iter().all(|(_, p)| *p <= tight), "{s:?}");
    }

    #[test]
    fn sizes_parse_as_people_write_them() {
        assert_eq!(parse_size("8GB"), Ok(8 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(
            parse_size("lots").is_err()
                && parse_size("-1GB").is_err()
                && parse_size("3XB").is_err()
        );
    }
}
