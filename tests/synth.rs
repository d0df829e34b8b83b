//! Synthetic GGUF models: written by `synth`, read back through the real reader (`GgufFile`),
//! compared against llama.cpp-converted reference files (the real models and the tiny fixtures).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::GgmlDType;
use candle_core::Device;
use dpo_lora::gguf::GgufFile;
use dpo_lora::synth::{SynthArch, SynthSpec};

const TYPES: [GgmlDType; 6] = [
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::Q8_0,
    GgmlDType::Q4_0,
    GgmlDType::Q4K,
    GgmlDType::Q6K,
];

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every tensor the spec promises is in the file with its shape and type, loads, and is finite;
/// nothing else is in the file.
fn check_tensors(f: &GgufFile, spec: &SynthSpec) {
    let expected = spec.tensors();
    assert_eq!(f.content.tensor_infos.len(), expected.len());
    for t in &expected {
        let info = &f.content.tensor_infos[&t.name];
        assert_eq!(info.ggml_dtype, t.dtype, "{}", t.name);
        let q = f.tensor(&t.name, &t.shape, &Device::Cpu).unwrap();
        let values: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(values.iter().all(|x| x.is_finite()), "{}", t.name);
    }
    assert_eq!(f.has_tensor("output.weight"), !spec.tied);
    if spec.arch == SynthArch::Qwen2 {
        assert_eq!(f.tensor_shape("blk.1.attn_k.bias"), Some(&[128usize][..]));
    }
}

fn check_hparams(f: &GgufFile, spec: &SynthSpec) {
    let a = spec.arch.gguf_name();
    let k = |s: &str| format!("{a}.{s}");
    assert_eq!(f.get_str("general.architecture").unwrap(), a);
    assert_eq!(f.get_usize(&k("block_count")).unwrap(), 2);
    assert_eq!(f.get_usize(&k("embedding_length")).unwrap(), 256);
    assert_eq!(f.get_usize(&k("feed_forward_length")).unwrap(), 512);
    assert_eq!(f.get_usize(&k("attention.head_count")).unwrap(), 4);
    assert_eq!(f.get_usize(&k("context_length")).unwrap(), 2048);
    let kv = if spec.arch == SynthArch::Gemma3 { 1 } else { 2 };
    assert_eq!(f.get_usize(&k("attention.head_count_kv")).unwrap(), kv);
    assert!(f.get_f64(&k("rope.freq_base")).unwrap() >= 10_000.0);
    let eps = f.get_f64(&k("attention.layer_norm_rms_epsilon")).unwrap();
    assert!(eps > 0.0 && eps <= 1e-5, "{eps}");
    match spec.arch {
        SynthArch::Llama => {
            assert_eq!(f.get_usize("llama.rope.dimension_count").unwrap(), 64);
            assert_eq!(f.get_usize("llama.vocab_size").unwrap(), spec.vocab_size());
            assert!(!f.has("llama.attention.key_length"));
        }
        SynthArch::Qwen2 => assert!(!f.has("qwen2.attention.key_length")),
        SynthArch::Qwen3 | SynthArch::Gemma3 => {
            assert_eq!(f.get_usize(&k("attention.key_length")).unwrap(), 64);
            assert_eq!(f.get_usize(&k("attention.value_length")).unwrap(), 64);
        }
    }
    if spec.arch == SynthArch::Gemma3 {
        assert_eq!(f.get_usize("gemma3.attention.sliding_window").unwrap(), 4);
        let every = f.get_usize("gemma3.attention.sliding_window_pattern");
        assert_eq!(every.unwrap(), 2);
    } else {
        assert!(!f.has(&k("attention.sliding_window")));
    }
}

/// The tokenizer metadata is a consistent vocabulary whose ids fit `token_embd`.
fn check_tokenizer(f: &GgufFile, spec: &SynthSpec) {
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    let vocab = tokens.len();
    assert!(vocab <= 512, "{vocab}");
    assert_eq!(vocab, spec.vocab_size());
    assert_eq!(f.tensor_shape("token_embd.weight"), Some(&[vocab, 256][..]));
    let types = f.get_int_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(types.len(), vocab);
    let unique: BTreeSet<&str> = tokens.iter().copied().collect();
    assert_eq!(unique.len(), vocab, "duplicate tokens");
    let id = |key: &str| f.get_usize(key).unwrap();
    for key in ["bos_token_id", "eos_token_id", "padding_token_id"] {
        let i = id(&format!("tokenizer.ggml.{key}"));
        assert!(
            i < vocab && types[i] == 3,
            "{key} = {i} is not a CONTROL token"
        );
    }
    assert!(f
        .get_str("tokenizer.chat_template")
        .unwrap()
        .contains("messages"));
    if spec.arch == SynthArch::Gemma3 {
        assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "llama");
        assert_eq!(
            f.opt_bool("tokenizer.ggml.add_bos_token").unwrap(),
            Some(true)
        );
        assert_eq!(
            f.opt_bool("tokenizer.ggml.add_space_prefix").unwrap(),
            Some(false)
        );
        assert_eq!(tokens[2], "<bos>");
        assert_eq!(id("tokenizer.ggml.unknown_token_id"), 3);
        assert_eq!(
            f.get_f32_array("tokenizer.ggml.scores").unwrap().len(),
            vocab
        );
        let bytes: Vec<&str> = (0..vocab)
            .filter(|&i| types[i] == 6)
            .map(|i| tokens[i])
            .collect();
        assert_eq!(bytes.len(), 256);
        assert_eq!((bytes[0], bytes[255]), ("<0x00>", "<0xFF>"));
        assert!(unique.contains("▁the"));
    } else {
        assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
        let pre = if spec.arch == SynthArch::Llama {
            "llama-bpe"
        } else {
            "qwen2"
        };
        assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), pre);
        assert_eq!(
            f.opt_bool("tokenizer.ggml.add_bos_token").unwrap(),
            Some(false)
        );
        let merges = f.get_str_array("tokenizer.ggml.merges").unwrap();
        assert!(merges.len() >= 30, "{}", merges.len());
        for m in merges {
            let (a, b) = m.split_once(' ').unwrap();
            for piece in [a, b, &format!("{a}{b}")] {
                assert!(
                    unique.contains(piece),
                    "merge `{m}`: `{piece}` is not a token"
                );
            }
        }
        assert!(unique.contains("Ġthe") && unique.contains("<|im_end|>"));
    }
}

#[test]
fn every_arch_and_type_reads_back_through_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    for arch in SynthArch::ALL {
        for (i, dtype) in TYPES.into_iter().enumerate() {
            let mut spec = SynthSpec::tiny(arch);
            spec.weight_type = dtype;
            spec.embed_type = dtype;
            spec.tied = i % 2 == 0;
            let path = dir
                .path()
                .join(format!("{}-{dtype:?}.gguf", arch.gguf_name()));
            spec.write(&path).unwrap();
            let f = GgufFile::open(&path).unwrap();
            check_tensors(&f, &spec);
            check_hparams(&f, &spec);
            check_tokenizer(&f, &spec);
        }
    }
    // 24 models and not one temporary file left behind.
    let files = files_in(dir.path());
    assert_eq!(files.len(), 24);
    assert!(files.iter().all(|n| !n.starts_with('.')), "{files:?}");
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    for arch in SynthArch::ALL {
        let mut spec = SynthSpec::tiny(arch);
        spec.weight_type = GgmlDType::Q4K;
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        spec.write(&a).unwrap();
        spec.write(&b).unwrap();
        spec.seed += 1;
        spec.write(&c).unwrap();
        let (a, b, c) = (
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            std::fs::read(c).unwrap(),
        );
        assert!(a == b, "{arch:?}: same seed, different bytes");
        assert_eq!(a.len(), c.len(), "the seed must change values only");
        assert!(a != c, "{arch:?}: a new seed changed nothing");
    }
}

#[test]
fn failed_writes_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec::tiny(SynthArch::Qwen3);
    let missing = dir.path().join("no_such_dir").join("m.gguf");
    let err = spec.write(&missing).unwrap_err().to_string();
    assert!(err.contains("no_such_dir"), "{err}");

    // K-quant rows of 320 do not fit 256-wide blocks: refused before any file is opened.
    let mut bad = SynthSpec::tiny(SynthArch::Gemma3);
    bad.hidden = 320;
    bad.weight_type = GgmlDType::Q4K;
    let err = bad
        .write(&dir.path().join("bad.gguf"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiple of the Q4K block size 256"), "{err}");
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

fn stats(f: &GgufFile, name: &str) -> (f64, f64) {
    let shape = f.tensor_shape(name).unwrap().to_vec();
    let t = f.tensor(name, &shape, &Device::Cpu).unwrap();
    let xs: Vec<f32> = t
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn values_have_the_documented_scale() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    SynthSpec::tiny(SynthArch::Qwen2).write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let close = |(m, s): (f64, f64), (em, es): (f64, f64), name: &str| {
        assert!(
            (m - em).abs() < 0.03 && (s / es - 1.0).abs() < 0.15,
            "{name}: mean {m} std {s}"
        );
    };
    // Norms 1 + N(0, 0.1²) (Gemma stores 1 + w, so "around 1" holds for every arch).
    close(stats(&f, "blk.0.attn_norm.weight"), (1.0, 0.1), "attn_norm");
    close(stats(&f, "output_norm.weight"), (1.0, 0.1), "output_norm");
    close(stats(&f, "blk.1.attn_q.bias"), (0.0, 0.1), "attn_q.bias");
    // Matrices N(0, 1 / in_features): ffn_down reads 512 features, attn_q 256.
    close(
        stats(&f, "blk.0.ffn_down.weight"),
        (0.0, 1.0 / 512f64.sqrt()),
        "ffn_down",
    );
    close(
        stats(&f, "blk.0.attn_q.weight"),
        (0.0, 1.0 / 16.0),
        "attn_q",
    );
    close(
        stats(&f, "token_embd.weight"),
        (0.0, 1.0 / 16.0),
        "token_embd",
    );
}

#[test]
fn gemma3_pattern_key_only_when_not_llama_cpp_default() {
    let key = "gemma3.attention.sliding_window_pattern";
    let has = |spec: &SynthSpec| spec.metadata().iter().any(|(k, _)| k == key);
    let mut spec = SynthSpec::tiny(SynthArch::Gemma3);
    assert!(has(&spec));
    spec.gemma3_global_every = 6;
    assert!(!has(&spec));
    assert!(!has(&SynthSpec::tiny(SynthArch::Llama)));
}

fn value_kind(v: &Value) -> String {
    format!("{:?}", v.value_type())
}

/// A synthetic model sized like a reference file has the same block-0 tensor names and shapes,
/// the same `{arch}.*` keys with the same value types, and (for the same tokenizer family) at
/// least the reference's `tokenizer.*` keys.
#[test]
fn layout_matches_llama_cpp_reference_files() {
    let refs = [
        (SynthArch::Llama, common::real_model("smollm2")),
        (SynthArch::Qwen2, common::tiny_gguf("qwen2")),
        (SynthArch::Qwen3, common::tiny_gguf("qwen3")),
        (SynthArch::Gemma3, common::real_model("gemma3")),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (arch, ref_path) in refs {
        let r = GgufFile::open(&ref_path).unwrap();
        let a = arch.gguf_name();
        let get = |k: &str| r.get_usize(&format!("{a}.{k}")).unwrap();
        let mut spec = SynthSpec::tiny(arch);
        spec.n_layer = 1;
        spec.hidden = get("embedding_length");
        spec.n_head = get("attention.head_count");
        spec.n_kv_head = get("attention.head_count_kv");
        spec.ffn = get("feed_forward_length");
        spec.head_dim = r
            .opt_usize(&format!("{a}.attention.key_length"))
            .unwrap()
            .unwrap_or(spec.hidden / spec.n_head);
        spec.tied = !r.has_tensor("output.weight");
        if arch == SynthArch::Gemma3 {
            spec.sliding_window = get("attention.sliding_window");
            spec.gemma3_global_every = 6;
        }
        let path = dir.path().join(format!("{a}.gguf"));
        spec.write(&path).unwrap();
        let s = GgufFile::open(&path).unwrap();

        let tensors = |f: &GgufFile| -> BTreeSet<(String, Vec<usize>)> {
            f.content
                .tensor_infos
                .iter()
                .filter(|(n, _)| !n.starts_with("blk.") || n.starts_with("blk.0."))
                // The vocabulary differs; the row length must not.
                .map(|(n, i)| {
                    let mut d = i.shape.dims().to_vec();
                    if n == "token_embd.weight" || n == "output.weight" {
                        d[0] = 0;
                    }
                    (n.clone(), d)
                })
                .collect()
        };
        assert_eq!(tensors(&s), tensors(&r), "{a}: tensor layout");

        let keys = |f: &GgufFile, prefix: &str| -> BTreeSet<(String, String)> {
            f.metadata()
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), value_kind(v)))
                .collect()
        };
        assert_eq!(
            keys(&s, &format!("{a}.")),
            keys(&r, &format!("{a}.")),
            "{a}: keys"
        );
        // SmolLM2's `smollm` vocabulary carries extra keys our llama-bpe one need not.
        if arch != SynthArch::Llama {
            let ours = keys(&s, "tokenizer.");
            let missing: Vec<_> = keys(&r, "tokenizer.").difference(&ours).cloned().collect();
            assert!(
                missing.is_empty(),
                "{a}: tokenizer keys missing: {missing:?}"
            );
        }
    }
}

/// Every preset's tensors have the preset's dimensions (checked without writing: the 8B ones
/// are gigabytes); one preset per architecture is written at one layer and loaded, and one at
/// its real vocabulary size (Qwen2.5 0.5B's 151,936 tokens) tokenizes and renders its template.
#[test]
fn every_shape_preset_loads_with_its_dimensions() {
    use dpo_lora::synth::shapes::SHAPES;
    for s in SHAPES {
        let spec = SynthSpec::from_shape(&s);
        spec.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", s.name));
        let t = spec.tensors();
        let find = |n: &str| {
            t.iter()
                .find(|x| x.name == n)
                .unwrap_or_else(|| panic!("{} {n}", s.name))
        };
        assert_eq!(
            find("token_embd.weight").shape,
            [s.vocab, s.hidden],
            "{}",
            s.name
        );
        assert_eq!(
            find("blk.0.attn_q.weight").shape,
            [s.n_head * s.head_dim, s.hidden]
        );
        assert_eq!(
            find("blk.0.attn_k.weight").shape,
            [s.n_kv_head * s.head_dim, s.hidden]
        );
        assert_eq!(find("blk.0.ffn_down.weight").shape, [s.hidden, s.ffn]);
        assert!(t
            .iter()
            .any(|x| x.name == format!("blk.{}.ffn_up.weight", s.n_layer - 1)));
        assert_eq!(
            t.iter().any(|x| x.name == "output.weight"),
            !s.tied,
            "{}",
            s.name
        );
    }
    let dir = tempfile::tempdir().unwrap();
    for name in ["smollm2-135m", "qwen2.5-0.5b", "gemma-3-270m", "qwen3-0.6b"] {
        let s = *dpo_lora::synth::shapes::find(name).unwrap();
        let mut spec = SynthSpec::from_shape(&s);
        spec.n_layer = 1;
        let full_vocab = s.name == "qwen2.5-0.5b";
        if !full_vocab {
            spec.vocab = Some(1024);
        }
        let path = dir.path().join(format!("{}.gguf", s.name));
        spec.write(&path).unwrap();
        let l = dpo_lora::session::Loaded::open(path.to_str().unwrap())
            .unwrap_or_else(|e| panic!("{}: {e:#}", s.name));
        let c = &l.model.config;
        assert_eq!(
            (c.hidden, c.ffn, c.n_head, c.n_kv_head, c.head_dim),
            (s.hidden, s.ffn, s.n_head, s.n_kv_head, s.head_dim),
            "{}",
            s.name
        );
        assert_eq!(l.model.is_tied(), s.tied, "{}", s.name);
        let vocab = if full_vocab { s.vocab } else { 1024 };
        assert_eq!((c.vocab, l.tok.vocab_size()), (vocab, vocab), "{}", s.name);
        // K-quant rows where they fit, llama-quantize's fallback where they do not.
        let f = GgufFile::open(&path).unwrap();
        for (tensor, cols) in [
            ("blk.0.ffn_down.weight", s.ffn),
            ("blk.0.attn_q.weight", s.hidden),
        ] {
            let t = f.content.tensor_infos[tensor].ggml_dtype;
            let want = if cols % 256 == 0 {
                GgmlDType::Q4K
            } else {
                GgmlDType::Q5_0
            };
            assert_eq!(t, want, "{} {tensor}", s.name);
        }
        if full_vocab {
            let ids = l.tok.encode("The cat sat on the mat.", false);
            assert!(
                !ids.is_empty() && ids.iter().all(|&i| (i as usize) < 3000),
                "{ids:?}"
            );
            let text = l
                .tok
                .chat_template()
                .unwrap()
                .render(&[dpo_lora::tokenizer::Message::new("user", "Hi")], true)
                .unwrap();
            assert!(text.contains("<|im_start|>user"), "{text}");
        }
    }
}
