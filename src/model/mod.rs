//! The model: a frozen quantized GGUF base (+ optional LoRA adapters), run over whole sequences
//! for training and scoring: a preference pair packed in one row with the prompt it shares
//! computed once (`pack`), or sequences batched with right padding.
//!
//! Owns: loading the base from GGUF (weights stay in their quant types), the differentiable
//! forward (no KV cache; causal and sliding-window masks; blocks recomputed in the backward,
//! `recompute`), how it executes (`backend`, fixed at load), LoRA adapters and PEFT folders
//! (`lora`, `peft`), and summed completion log-probs.
//! Does not: tokenize (see `tokenizer`), build batches from records (see `data`), or know losses.
//!
//! Every tensor inside dpo-lora is in Hugging Face's layout: llama.cpp's Q/K row permutation for
//! llama-type models is undone at load, so RoPE is the half-split form for every architecture and
//! a LoRA B on q/k is already in PEFT's row order. References: HF `modeling_llama.py`,
//! `modeling_qwen2/3.py`, `modeling_gemma3.py`; llama.cpp `src/models/*.cpp`.

pub mod backend;
pub mod block;
pub mod config;
pub mod handover;
pub mod kernels;
pub mod lora;
pub mod ops;
pub mod pack;
pub mod peft;
pub mod recompute;

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

use crate::gguf::{GgufError, GgufFile};
pub use backend::{Backend, BackendChoice, Execution};
pub use block::Keep;
use block::{Block, BlockInputs, Linears};
pub use config::{Arch, Config};
use kernels::qweight::QWeight;
pub use lora::{Adapters, Branch, Lora, LoraConfig, LoraLinear, Target};
use ops::attention::attention_mask;
pub use ops::attention::RowLayout;
use ops::dense::DeviceMatrix;
use ops::head;
use ops::linear::QLinear;
use ops::norm::rms_norm;
use ops::rope::rope_tables;
pub use pack::Packed;

pub struct Model {
    pub config: Config,
    embed: Arc<QWeight>,
    /// `None` when the output projection is tied to the embedding.
    output: Option<Arc<QWeight>>,
    output_norm: Tensor,
    blocks: Vec<Block>,
    rope_freq_factors: Option<Vec<f32>>,
    device: Device,
    /// How every op runs, fixed at load.
    backend: Backend,
    /// The embedding and the output matrix as the Candle backend reads them (one matrix when
    /// tied); `None` under the CPU kernels.
    candle: Option<CandleMatrices>,
    /// Training forwards keep only each block's input and recompute the block in the backward.
    checkpointing: bool,
    /// What a checkpointed block keeps besides its input.
    keep: Keep,
    /// Pairs run as one row each, their common prefix computed once (see `pack`).
    prefix_sharing: bool,
    /// Activation type of the forward: f32, or bf16/f16 on the Candle backend (the log-softmax,
    /// the loss and the LoRA weights stay f32).
    dtype: DType,
}

/// The embedding and output matrices on the Candle backend's device.
struct CandleMatrices {
    embed: DeviceMatrix,
    output: DeviceMatrix,
}

/// A token sequence and where its scored part starts: tokens `ids[score_from..]` are scored,
/// each from the position before it (so `score_from >= 1`).
#[derive(Debug, Clone, Copy)]
pub struct Scored<'a> {
    pub ids: &'a [u32],
    pub score_from: usize,
}

/// Per-sequence sums `(n_seq,)` and the per-token log-probs `(n_tokens,)` behind them.
pub struct SeqLogps {
    pub sums: Tensor,
    pub tokens: Tensor,
    /// Token range of each sequence in `tokens`.
    pub ranges: Vec<std::ops::Range<usize>>,
}

impl Model {
    /// Load as `exec` says. The weights are read and prepared on the host (llama's Q/K rows
    /// reordered) and stay there for the CPU kernels; on another device they are copied there
    /// once, still quantized. The backend and dtype are fixed from here on.
    pub fn load(f: &GgufFile, exec: &Execution) -> std::result::Result<Self, GgufError> {
        let mut m = Self::load_host(f)?;
        if exec.backend == Backend::CpuKernels && !backend::kernels_fit(&exec.device, exec.dtype) {
            return Err(tensor_err(
                f,
                "(loading)",
                candle_core::Error::Msg(format!(
                    "the CPU kernels run f32 on the CPU, not {:?} on {:?}",
                    exec.dtype,
                    exec.device.location()
                )),
            ));
        }
        m.backend = exec.backend;
        m.dtype = exec.dtype;
        if exec.backend == Backend::Candle {
            m.move_to(&exec.device)
                .map_err(|e| tensor_err(f, "(moving to the device)", e))?;
        }
        Ok(m)
    }

    /// Prepare the Candle backend on `device`: the quantized weights copied there once (read in
    /// place on the CPU), and the norms.
    fn move_to(&mut self, device: &Device) -> Result<()> {
        let embed = DeviceMatrix::new(&self.embed, device)?;
        let output = match &self.output {
            Some(w) => DeviceMatrix::new(w, device)?,
            None => embed.clone(),
        };
        self.candle = Some(CandleMatrices { embed, output });
        for b in &mut self.blocks {
            for l in [
                &mut b.q,
                &mut b.k,
                &mut b.v,
                &mut b.o,
                &mut b.gate,
                &mut b.up,
                &mut b.down,
            ] {
                l.use_device(device)?;
            }
            for t in [&mut b.attn_norm, &mut b.ffn_norm] {
                *t = t.to_device(device)?;
            }
            for t in [
                &mut b.q_norm,
                &mut b.k_norm,
                &mut b.post_attn_norm,
                &mut b.post_ffn_norm,
            ]
            .into_iter()
            .flatten()
            {
                *t = t.to_device(device)?;
            }
        }
        self.output_norm = self.output_norm.to_device(device)?;
        self.device = device.clone();
        Ok(())
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// How the ops run (see `backend`).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Gradient checkpointing of training forwards (`Adapters::Train`), on by default: each
    /// block is run again in the backward instead of keeping its intermediates (see `recompute`).
    pub fn set_checkpointing(&mut self, on: bool) {
        self.checkpointing = on;
    }

    pub fn checkpointing(&self) -> bool {
        self.checkpointing
    }

    /// What a checkpointed block keeps between its two runs (default [`Keep::Projections`]).
    pub fn set_checkpoint_keep(&mut self, keep: Keep) {
        self.keep = keep;
    }

    pub fn checkpoint_keep(&self) -> Keep {
        self.keep
    }

    /// Prefix sharing in [`Model::pair_logps`], on by default; off runs chosen and rejected as
    /// separate rows (for measuring what sharing saves).
    pub fn set_prefix_sharing(&mut self, on: bool) {
        self.prefix_sharing = on;
    }

    fn load_host(f: &GgufFile) -> std::result::Result<Self, GgufError> {
        let device = &Device::Cpu;
        let config = Config::from_gguf(f)?;
        let c = &config;
        let (hd, h) = (c.head_dim, c.hidden);
        let mat =
            |name: &str, rows: usize, cols: usize| -> std::result::Result<QWeight, GgufError> {
                let q = f.tensor(name, &[rows, cols], device)?;
                QWeight::new(q).map_err(|e| tensor_err(f, name, e))
            };
        let vec = |name: &str, len: usize| -> std::result::Result<Tensor, GgufError> {
            let q = f.tensor(name, &[len], device)?;
            q.dequantize(device).map_err(|e| tensor_err(f, name, e))
        };
        let opt_vec = |name: &str, len: usize| -> std::result::Result<Option<Tensor>, GgufError> {
            if f.has_tensor(name) {
                vec(name, len).map(Some)
            } else {
                Ok(None)
            }
        };
        let embed = Arc::new(mat("token_embd.weight", c.vocab, h)?);
        let output = if f.has_tensor("output.weight") {
            Some(Arc::new(mat("output.weight", c.vocab, h)?))
        } else {
            None
        };
        let output_norm = vec("output_norm.weight", h)?;
        let rope_freq_factors = if f.has_tensor("rope_freqs.weight") {
            Some(
                vec("rope_freqs.weight", hd / 2)?
                    .to_vec1::<f32>()
                    .map_err(|e| tensor_err(f, "rope_freqs.weight", e))?,
            )
        } else {
            None
        };
        let mut blocks = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let p = |s: &str| format!("blk.{il}.{s}");
            let mut q = mat(&p("attn_q.weight"), c.n_head * hd, h)?;
            let mut k = mat(&p("attn_k.weight"), c.n_kv_head * hd, h)?;
            let mut qb = opt_vec(&p("attn_q.bias"), c.n_head * hd)?;
            let mut kb = opt_vec(&p("attn_k.bias"), c.n_kv_head * hd)?;
            if c.arch == Arch::Llama {
                let pq = unpermute_qk(c.n_head, hd);
                let pk = unpermute_qk(c.n_kv_head, hd);
                q = q
                    .permute_rows(&pq)
                    .map_err(|e| tensor_err(f, &p("attn_q.weight"), e))?;
                k = k
                    .permute_rows(&pk)
                    .map_err(|e| tensor_err(f, &p("attn_k.weight"), e))?;
                qb = qb
                    .map(|b| permute_vec(&b, &pq))
                    .transpose()
                    .map_err(|e| tensor_err(f, &p("attn_q.bias"), e))?;
                kb = kb
                    .map(|b| permute_vec(&b, &pk))
                    .transpose()
                    .map_err(|e| tensor_err(f, &p("attn_k.bias"), e))?;
            }
            if c.arch.has_qkv_bias() && (qb.is_none() || kb.is_none()) {
                return Err(GgufError::MissingTensor {
                    path: f.path.clone(),
                    name: p("attn_q.bias / attn_k.bias"),
                });
            }
            let (q_norm, k_norm) = if c.arch.has_qk_norm() {
                (
                    Some(vec(&p("attn_q_norm.weight"), hd)?),
                    Some(vec(&p("attn_k_norm.weight"), hd)?),
                )
            } else {
                (None, None)
            };
            let (post_attn_norm, post_ffn_norm) = if c.arch.has_post_norms() {
                (
                    Some(vec(&p("post_attention_norm.weight"), h)?),
                    Some(vec(&p("post_ffw_norm.weight"), h)?),
                )
            } else {
                (None, None)
            };
            blocks.push(Block {
                attn_norm: vec(&p("attn_norm.weight"), h)?,
                q: QLinear::new(q, qb),
                k: QLinear::new(k, kb),
                v: QLinear::new(
                    mat(&p("attn_v.weight"), c.n_kv_head * hd, h)?,
                    opt_vec(&p("attn_v.bias"), c.n_kv_head * hd)?,
                ),
                o: QLinear::new(mat(&p("attn_output.weight"), h, c.n_head * hd)?, None),
                q_norm,
                k_norm,
                post_attn_norm,
                ffn_norm: vec(&p("ffn_norm.weight"), h)?,
                gate: QLinear::new(mat(&p("ffn_gate.weight"), c.ffn, h)?, None),
                up: QLinear::new(mat(&p("ffn_up.weight"), c.ffn, h)?, None),
                down: QLinear::new(mat(&p("ffn_down.weight"), h, c.ffn)?, None),
                post_ffn_norm,
            });
        }
        Ok(Self {
            config,
            embed,
            output,
            output_norm,
            blocks,
            rope_freq_factors,
            device: device.clone(),
            backend: Backend::CpuKernels,
            candle: None,
            checkpointing: true,
            keep: Keep::default(),
            prefix_sharing: true,
            dtype: DType::F32,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The output projection `(vocab, hidden)`: `output.weight`, or the embedding when tied.
    pub fn output_weight(&self) -> &QWeight {
        self.output.as_deref().unwrap_or(&self.embed)
    }

    pub fn is_tied(&self) -> bool {
        self.output.is_none()
    }

    /// The frozen linear `target` of layer `il` (for LoRA shapes and export).
    pub fn linear(&self, il: usize, target: Target) -> &QLinear {
        self.blocks[il].linear(target)
    }

    /// Bytes the model's tensors take in memory (quantized weights as stored, vectors in f32).
    pub fn size_in_bytes(&self) -> usize {
        let vec_bytes = |t: &Tensor| t.elem_count() * 4;
        let mut n = self.embed.size_in_bytes()
            + self.output.as_ref().map_or(0, |w| w.size_in_bytes())
            + vec_bytes(&self.output_norm);
        for b in &self.blocks {
            for l in [&b.q, &b.k, &b.v, &b.o, &b.gate, &b.up, &b.down] {
                n += l.weight().size_in_bytes() + l.bias().map_or(0, vec_bytes);
            }
            for t in [
                Some(&b.attn_norm),
                Some(&b.ffn_norm),
                b.q_norm.as_ref(),
                b.k_norm.as_ref(),
                b.post_attn_norm.as_ref(),
                b.post_ffn_norm.as_ref(),
            ]
            .into_iter()
            .flatten()
            {
                n += vec_bytes(t);
            }
        }
        n
    }

    /// The LoRA branch of `adapters` at `(il, target)`.
    fn branch(il: usize, target: Target, adapters: Adapters) -> Option<Branch> {
        match adapters {
            Adapters::Off => None,
            Adapters::On(lora) => lora.branch_at(il, target, None),
            Adapters::Train(lora, seed) => lora.branch_at(il, target, Some(seed)),
        }
    }

    /// `(in, out)` of the frozen linear `target` in layer `il` (for building adapters).
    pub fn linear_dims(&self, il: usize, target: Target) -> (usize, usize) {
        let l = self.linear(il, target);
        (l.in_features(), l.out_features())
    }

    /// Final-normed hidden states `(b_sz, seq_len, hidden)` for right-padded `ids`
    /// (`b_sz * seq_len` ids, row-major) with real lengths `lengths`.
    pub fn forward_hidden(
        &self,
        ids: &[u32],
        lengths: &[usize],
        seq_len: usize,
        adapters: Adapters,
    ) -> Result<Tensor> {
        let rows: Vec<RowLayout> = lengths.iter().map(|&l| RowLayout::linear(l)).collect();
        self.forward_rows(ids, &rows, seq_len, adapters)
    }

    /// Final-normed hidden states `(b_sz, seq_len, hidden)` for right-padded `ids` laid out as
    /// `rows` say (positions and branches: see [`RowLayout`]).
    pub fn forward_rows(
        &self,
        ids: &[u32],
        rows: &[RowLayout],
        seq_len: usize,
        adapters: Adapters,
    ) -> Result<Tensor> {
        let c = &self.config;
        let b_sz = rows.len();
        if ids.len() != b_sz * seq_len || rows.iter().any(|r| r.len() > seq_len) {
            candle_core::bail!("forward: {} ids for {b_sz} x {seq_len}", ids.len())
        }
        let (hd, dev) = (c.head_dim, &self.device);
        let x = match &self.candle {
            Some(m) => m.embed.gather_f32(ids)?,
            None => self.embed.gather_rows(ids, dev)?,
        };
        let mut x = x.reshape((b_sz, seq_len, c.hidden))?;
        if c.arch == Arch::Gemma3 {
            x = (x * (c.hidden as f64).sqrt())?;
        }
        let mut x = x.to_dtype(self.dtype)?;
        // RoPE positions per row; padding gets its index (it is masked out)
        let positions: Vec<usize> = rows
            .iter()
            .flat_map(|r| r.pos.iter().copied().chain(r.len()..seq_len))
            .collect();
        let tables = |base, factors, scale| -> Result<(Tensor, Tensor)> {
            let (cos, sin) = rope_tables(&positions, hd, base, factors, scale, dev)?;
            Ok((
                cos.reshape((b_sz, seq_len, hd))?,
                sin.reshape((b_sz, seq_len, hd))?,
            ))
        };
        let global_rope = tables(
            c.rope_base,
            self.rope_freq_factors.as_deref(),
            1.0 / c.rope_linear_factor,
        )?;
        let local_rope = tables(c.rope_base_local, None, 1.0)?;
        let global_mask = attention_mask(rows, seq_len, None, dev)?;
        let local_mask = match c.sliding_window {
            Some(w) => Some(attention_mask(rows, seq_len, Some(w), dev)?),
            None => None,
        };
        for (il, b) in self.blocks.iter().enumerate() {
            let sliding = c.is_sliding(il);
            let (cos, sin) = if sliding { &local_rope } else { &global_rope };
            let mask = match (&local_mask, sliding) {
                (Some(m), true) => m,
                _ => &global_mask,
            };
            let inputs = BlockInputs {
                backend: self.backend,
                keep: self.keep,
                b_sz,
                seq_len,
                cos: cos.clone(),
                sin: sin.clone(),
                mask: mask.clone(),
            };
            x = match adapters {
                Adapters::Train(lora, seed) if self.checkpointing => {
                    recompute::block(c, b, &inputs, il, &x, lora, seed)?
                }
                _ => {
                    let delta = |t| Ok(Self::branch(il, t, adapters));
                    b.forward(c, &inputs, &x, &delta, &Linears::Compute)?
                }
            };
        }
        rms_norm(self.backend, &x, &self.output_norm, c.rms_eps)
    }

    /// Log-probs of the scored tokens of each sequence, batched with right padding. The head
    /// runs only at scored positions. Differentiable w.r.t. the adapters when they are on.
    pub fn sequence_logps(&self, seqs: &[Scored], adapters: Adapters) -> Result<SeqLogps> {
        self.logps(&Packed::sequences(seqs)?, adapters)
    }

    /// [`Model::sequence_logps`] of every chosen then every rejected sequence, each pair in one
    /// row with the prompt they share computed once (see [`Packed::pairs`]). Equal to scoring
    /// them separately up to float rounding.
    pub fn pair_logps(&self, pairs: &[(Scored, Scored)], adapters: Adapters) -> Result<SeqLogps> {
        self.logps(&self.pack_pairs(pairs)?, adapters)
    }

    /// The rows [`Model::pair_logps`] runs.
    pub fn pack_pairs(&self, pairs: &[(Scored, Scored)]) -> Result<Packed> {
        if self.prefix_sharing {
            Packed::pairs(pairs)
        } else {
            let seqs: Vec<Scored> = pairs
                .iter()
                .map(|p| p.0)
                .chain(pairs.iter().map(|p| p.1))
                .collect();
            Packed::sequences(&seqs)
        }
    }

    /// Log-probs of the scored tokens of `p`'s output sequences.
    pub fn logps(&self, p: &Packed, adapters: Adapters) -> Result<SeqLogps> {
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        let mut ranges = Vec::with_capacity(p.scored.len());
        for s in &p.scored {
            let start = targets.len();
            for &(row, id) in s {
                rows.push(row);
                targets.push(id);
            }
            ranges.push(start..targets.len());
        }
        let hidden = self.forward_rows(&p.ids, &p.rows, p.seq_len, adapters)?;
        let flat = hidden.reshape((p.rows.len() * p.seq_len, self.config.hidden))?;
        let picked = flat.index_select(&Tensor::new(rows.as_slice(), &self.device)?, 0)?;
        let tokens = match &self.candle {
            Some(m) => head::token_logps_candle(&picked, &targets, &m.output)?,
            None => head::token_logps(&picked, &targets, self.output_weight())?,
        };
        // sums = S (n_seq, n_tok) · tokens: a differentiable segment sum.
        let (n_seq, n_tok) = (ranges.len(), targets.len());
        let mut seg = vec![0f32; n_seq * n_tok];
        for (i, r) in ranges.iter().enumerate() {
            for j in r.clone() {
                seg[i * n_tok + j] = 1.0;
            }
        }
        let seg = Tensor::from_vec(seg, (n_seq, n_tok), &self.device)?;
        let sums = seg.matmul(&tokens.unsqueeze(1)?)?.squeeze(1)?;
        Ok(SeqLogps {
            sums,
            tokens,
            ranges,
        })
    }
}

/// Row order that undoes llama.cpp's `permute` of Q/K for one projection with `n_head` heads:
/// GGUF row `h·d + 2i + j` holds Hugging Face row `h·d + j·d/2 + i`, so row `i` of the Hugging
/// Face matrix is row `perm[i]` of llama.cpp's (exports use it and its inverse).
pub fn unpermute_qk(n_head: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut perm = vec![0; n_head * head_dim];
    for h in 0..n_head {
        for j in 0..2 {
            for i in 0..half {
                perm[h * head_dim + j * half + i] = h * head_dim + 2 * i + j;
            }
        }
    }
    perm
}

fn permute_vec(t: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let idx: Vec<u32> = perm.iter().map(|&p| p as u32).collect();
    t.index_select(&Tensor::new(idx.as_slice(), t.device())?, 0)
}

fn tensor_err(f: &GgufFile, name: &str, e: candle_core::Error) -> GgufError {
    GgufError::Tensor {
        path: f.path.clone(),
        name: name.to_string(),
        reason: e.to_string().lines().next().unwrap_or("").to_string(),
    }
}
