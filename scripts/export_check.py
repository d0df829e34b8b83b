#!/usr/bin/env python3
"""Check dpo-lora's exports in the real clients: transformers, PEFT and llama.cpp.

For each real model (SmolLM2: llama, Gemma 3: gemma3):
  1. dpo-lora exports the base alone as a Hugging Face folder (f32).
  2. PEFT makes a LoRA adapter on it (random, B non-zero, alpha != rank; rsLoRA for Gemma) and
     saves it: dpo-lora has to read PEFT's own files.
  3. `dpo-lora score --adapter` gives the reference log-probs (per completion sum).
  4. dpo-lora exports peft, hf (f32 and bf16), gguf (f32 and the base's types) and gguf-lora.
  5. transformers loads the merged f32 / bf16 folders; PEFT applies the exported adapter to the
     base folder; llama.cpp (llama-cpp-python) loads the merged GGUF and base + LoRA GGUF.
     Each one's log-probs on the fixture records are compared with step 3; llama.cpp generates.
  6. The exported tokenizer.json is compared with llama.cpp's ids in the fixtures.

Then, for a trained adapter on each real model (the quick start's recipe on SmolLM2, the Gemma
recipe on Gemma 3, trained here): merged GGUFs at --quant base, q8_0, keep and f16, each scored
on the run's held-out pairs by dpo-lora (its fidelity.json) and by llama.cpp on the same token
ids (`dpo-lora score --ids`): the trained change kept (margin of the export minus the base's,
over base + adapter's minus the base's; llama.cpp's base + adapter is its own base + LoRA GGUF),
agreement with base + adapter, and the file size against the base's.

Fails (exit 1) when transformers f32 or PEFT differ from dpo-lora by more than 5e-3 nats per
completion sum, llama.cpp on f32 GGUFs (merged, or base + LoRA GGUF) by more than 0.05, the
tokenizer disagrees with llama.cpp, or the --quant keep export of a trained adapter is over
1.35x the base file, keeps under 80 % of the trained change or agrees on under 95 % of the
pairs, in dpo-lora or in llama.cpp. Writes a markdown report.
Run through scripts/export-check.sh, which installs the clients.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

TOL = 5e-3
# llama.cpp's own f32 kernels against transformers/dpo-lora f32: ~1-3e-2 nats per sequence here.
LLAMA_F32_TOL = 0.05
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODELS = {
    # name: (file in --models, or fixtures/<dir>/<file> for the tiny ones; rank, alpha, rslora)
    "smollm2": ("SmolLM2-135M-Instruct.Q4_1.gguf", 4, 12.0, False),
    "gemma3": ("gemma-3-270m-q4_k_m.gguf", 8, 4.0, True),
    # Tiny random models cover the other architectures' configs: qwen2's q/k/v biases,
    # qwen3's q/k norms.
    "tiny/qwen2": ("tiny-qwen2-q8_0.gguf", 4, 8.0, False),
    "tiny/qwen3": ("tiny-qwen3-q8_0.gguf", 2, 6.0, False),
}


def sh(*args):
    """Run dpo-lora; its stderr goes to ours, stdout is returned."""
    r = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(map(str, args))}")
    return r.stdout


def records(fixtures, name):
    """Fixture records as (prompt_ids, chosen_ids, rejected_ids), llama.cpp's ids."""
    t = json.loads((fixtures / name / "tokens.json").read_text())
    return [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in t["records"]]


def records_jsonl(fixtures, name, out):
    """The fixture records dpo-lora scores (Gemma has no chat template: plain ones only)."""
    t = json.loads((fixtures / name / "tokens.json").read_text())
    keep = {r["index"] for r in t["records"]}
    lines = (fixtures / "records.jsonl").read_text().splitlines()
    out.write_text("".join(l + "\n" for i, l in enumerate(lines) if i in keep))
    return out


def dpo_scores(bin_, model, adapter, data):
    args = [bin_, "score", "-m", model, "--data", data]
    if adapter:
        args += ["--adapter", adapter]
    rows = [json.loads(l) for l in sh(*args).splitlines()]
    return [(r["chosen"], r["rejected"]) for r in rows]


def seq_logp(logits_fn, prompt, completion):
    ids = prompt + completion
    lp = logits_fn(ids)  # (len(ids), vocab) log-softmax, float64
    n = len(prompt)
    return float(sum(lp[t - 1, ids[t]] for t in range(n, len(ids))))


def torch_logps(model):
    def f(ids):
        with torch.no_grad():
            out = model(torch.tensor([ids])).logits[0].double()
        return torch.log_softmax(out, -1).numpy()
    return f


def llama_logps(llm):
    def f(ids):
        llm.reset()
        llm.eval(ids)
        x = np.array(llm.scores[: len(ids)], dtype=np.float64)
        x -= x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))
    return f


def score_all(fn, recs):
    return [(seq_logp(fn, p, c), seq_logp(fn, p, r)) for p, c, r in recs]


def max_diff(a, b):
    return max(max(abs(x[0] - y[0]), abs(x[1] - y[1])) for x, y in zip(a, b))


def make_peft_adapter(base_dir, out, rank, alpha, rslora, seed, zero=False):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    m = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS, lora_dropout=0.0,
                     use_rslora=rslora, task_type="CAUSAL_LM")
    pm = get_peft_model(m, cfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.zeros_like(p) if zero else torch.randn_like(p) * 0.01)
    pm.save_pretrained(out)


def config_diffs(ours, given):
    """Dimension keys of the original transformers config that our config.json gets wrong."""
    out = []
    for k, v in given.items():
        if k not in ours or k in ("torch_dtype", "dtype", "transformers_version", "use_cache",
                                   "initializer_range", "_name_or_path"):
            continue
        w = ours[k]
        same = (math.isclose(w, v, rel_tol=1e-6) if isinstance(v, float) and isinstance(w, (int, float))
                else w == v)
        if not same:
            out.append(f"{k}: ours {w!r}, original {v!r}")
    return out


def tokenizer_mismatches(folder, fixtures, name):
    """Strings (x2: without / with BOS-EOS) whose ids differ from llama.cpp's: through the
    tokenizers library on our tokenizer.json, and through transformers' AutoTokenizer (which
    may swap in its own class for a model type, e.g. Qwen2Tokenizer's NFC normalizer)."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    auto = AutoTokenizer.from_pretrained(folder)
    strings = json.loads((fixtures / name / "strings_tokens.json").read_text())["strings"]
    bad_raw = bad_auto = 0
    for s in strings:
        for special, want in ((False, s["parse_special_true"]),
                              (True, s["add_special_true_parse_special_true"])):
            bad_raw += raw.encode(s["text"], add_special_tokens=special).ids != want
            bad_auto += auto(s["text"], add_special_tokens=special).input_ids != want
    return bad_raw, bad_auto, 2 * len(strings), type(auto).__name__


def check_model(name, a, report):
    from llama_cpp import Llama
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    file, rank, alpha, rslora = MODELS[name]
    fixtures = Path(a.fixtures)
    model = (fixtures / name if name.startswith("tiny/") else Path(a.models)) / file
    work = Path(a.work) / name
    work.mkdir(parents=True, exist_ok=True)
    recs = records(fixtures, name)
    data = records_jsonl(fixtures, name, work / "records.jsonl")
    bin_ = a.dpo_lora
    ok = True

    def export(fmt, out, *extra, adapter=None):
        args = [bin_, "export", "-m", model, "--format", fmt, "--out", work / out, "--force", *extra]
        if adapter:
            args += ["--adapter", adapter]
        sh(*args)
        return work / out

    base = export("hf", "hf-base", "--base-only", "--dtype", "f32")
    make_peft_adapter(base, work / "peft-src", rank, alpha, rslora, seed=7)
    src = work / "peft-src"
    make_peft_adapter(base, work / "peft-zero", rank, alpha, rslora, seed=7, zero=True)
    zero = work / "peft-zero"
    ref = dpo_scores(bin_, model, src, data)
    plain = dpo_scores(bin_, model, None, data)
    shift = max_diff(ref, plain)

    # Each large export is written just before its client reads it and removed right after, so
    # the check needs the disk of the base folder and one export at a time (~2.2 GB for Gemma),
    # not of all of them (~5 GB).
    rows = []

    def row(what, scores, limit=None):
        nonlocal ok
        d = max_diff(scores, ref)
        verdict = ""
        if limit is not None:
            verdict = "pass" if d <= limit else "FAIL"
            ok &= d <= limit
        rows.append((what, d, verdict))

    def llama(path, **kw):
        return Llama(model_path=str(path), n_ctx=512, logits_all=True, verbose=False, seed=0, **kw)

    rows.append(("dpo-lora score, base without the adapter (how much the adapter moves)", shift, ""))
    hf32 = export("hf", "hf-f32", "--dtype", "f32", adapter=src)
    m = AutoModelForCausalLM.from_pretrained(hf32, dtype=torch.float32).eval()
    row("transformers, merged hf f32", score_all(torch_logps(m), recs), TOL)
    del m
    bad, bad_auto, total, auto_class = (tokenizer_mismatches(hf32, fixtures, name)
                  if (fixtures / name / "strings_tokens.json").exists() else (0, 0, 0, ""))
    ok &= bad == 0
    given = fixtures / name / "config.json"
    diffs = (config_diffs(json.loads((hf32 / "config.json").read_text()), json.loads(given.read_text()))
             if given.exists() else None)
    shutil.rmtree(hf32)
    hf16 = export("hf", "hf-bf16", adapter=src)
    m = AutoModelForCausalLM.from_pretrained(hf16, dtype=torch.bfloat16).eval()
    row("transformers, merged hf bf16 (bf16 compute)", score_all(torch_logps(m), recs))
    del m
    m = AutoModelForCausalLM.from_pretrained(hf16, dtype=torch.float32).eval()
    row("transformers, merged hf bf16 weights, f32 compute", score_all(torch_logps(m), recs))
    del m
    shutil.rmtree(hf16)
    peft_out = export("peft", "peft", adapter=src)
    bm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    pm = PeftModel.from_pretrained(bm, peft_out).eval()
    row("PEFT, exported adapter on the --base-only folder", score_all(torch_logps(pm), recs), TOL)
    merged = pm.merge_and_unload()
    del pm, bm, merged
    shutil.rmtree(base)

    g32 = export("gguf", "gguf-f32", "--quant", "f32", adapter=src)
    llm = llama(g32 / "model.gguf")
    row("llama.cpp, merged gguf f32", score_all(llama_logps(llm), recs), LLAMA_F32_TOL)
    gen_merged = llm("The capital of France is", max_tokens=12, temperature=0.0)["choices"][0]["text"]
    del llm
    shutil.rmtree(g32)
    gq = export("gguf", "gguf-base", "--quant", "base", adapter=src)
    llm = llama(gq / "model.gguf")
    row("llama.cpp, merged gguf at the base's quant types", score_all(llama_logps(llm), recs))
    del llm
    shutil.rmtree(gq)
    glora = export("gguf-lora", "gguf-lora", adapter=src)
    llm = llama(model, lora_path=str(glora / "adapter.gguf"))
    with_lora = score_all(llama_logps(llm), recs)
    row("llama.cpp, base gguf + LoRA gguf (quantized kernels)", with_lora)
    gen_lora = llm("The capital of France is", max_tokens=12, temperature=0.0)["choices"][0]["text"]
    del llm
    # The base dequantized to f32 as a GGUF (merging an all-zero adapter), so llama.cpp can apply
    # the LoRA GGUF without its quantized kernels in the way.
    gbase32 = export("gguf", "gguf-base-f32", "--quant", "f32", adapter=zero)
    llm = llama(gbase32 / "model.gguf", lora_path=str(glora / "adapter.gguf"))
    row("llama.cpp, f32 base gguf + LoRA gguf", score_all(llama_logps(llm), recs), LLAMA_F32_TOL)
    del llm
    shutil.rmtree(gbase32)
    llm = llama(model)
    base_cpp = score_all(llama_logps(llm), recs)
    del llm
    rows.append(("llama.cpp, base gguf alone vs dpo-lora base (kernel difference, context)",
                 max_diff(base_cpp, plain), ""))
    # The adapter's effect, which cancels llama.cpp's quantized-kernel error on the base.
    effect = lambda a, b: [(x[0] - y[0], x[1] - y[1]) for x, y in zip(a, b)]
    rows.append(("adapter effect: llama.cpp (base + LoRA gguf) - (base) vs dpo-lora's",
                 max_diff(effect(with_lora, base_cpp), effect(ref, plain)), ""))

    report.append(f"## {name} (`{file}`), adapter r={rank} alpha={alpha} rslora={rslora}, "
                  f"{len(recs)} records\n")
    report.append("| client | max abs difference per completion sum vs `dpo-lora score --adapter` (nats) | check |")
    report.append("|---|---|---|")
    for what, d, verdict in rows:
        report.append(f"| {what} | {d:.2e} | {verdict} |")
    report.append("")
    if total:
        report.append(f"- exported tokenizer.json vs llama.cpp ids: {bad} mismatches of {total} "
                      f"(tokenizers library); {bad_auto} through transformers' AutoTokenizer ({auto_class})")
    if diffs is not None:
        ok &= not diffs
        report.append(f"- config.json vs the config the model was made from: "
                      f"{'same dimensions' if not diffs else 'DIFFERS: ' + '; '.join(diffs)}")
    report.append(f"- llama.cpp generation, merged f32: {gen_merged!r}")
    report.append(f"- llama.cpp generation, base + LoRA gguf: {gen_lora!r}\n")
    shutil.rmtree(work)
    return ok


# The trained-adapter check: recipe per real model, and the goal --quant keep must meet.
TRAINED = {
    "smollm2": "recipes/quickstart.yaml",
    "gemma3": "recipes/gemma3-270m.yaml",
}
KEEP_MAX_SIZE, KEEP_MIN_KEPT, KEEP_MIN_AGREE = 1.35, 0.80, 0.95
QUANTS = ["base", "q8_0", "keep", "f16"]


def fidelity_of(pairs, base, adapted):
    """kept, agreement, mean |delta| of `pairs` [(chosen, rejected)] against base and adapted."""
    m = lambda xs: [c - r for c, r in xs]
    mb, ma, me = m(base), m(adapted), m(pairs)
    n = len(pairs)
    change_a = sum(a - b for a, b in zip(ma, mb)) / n
    change_e = sum(e - b for e, b in zip(me, mb)) / n
    agree = sum((e > 0) == (a > 0) for e, a in zip(me, ma)) / n
    delta = sum(abs(x[0] - y[0]) + abs(x[1] - y[1]) for x, y in zip(pairs, adapted)) / (2 * n)
    return change_e / change_a, agree, delta


def check_trained(name, a, report):
    from llama_cpp import Llama

    file = MODELS[name][0]
    model = Path(a.models) / file
    work = Path(a.work) / f"{name}-trained"
    work.mkdir(parents=True, exist_ok=True)
    bin_ = a.dpo_lora
    recipe = TRAINED[name]
    run = work / "run"
    t0 = time.time()
    sh(bin_, "run", recipe, "--quiet", "--set", f"model.path={model}", "--set", f"output.dir={run}",
       "--set", "output.export=[gguf-lora]")
    trained_s = time.time() - t0
    import yaml
    eval_data = yaml.safe_load(open(recipe))["data"]["eval"]
    rows = [json.loads(l) for l in sh(bin_, "score", "-m", model, "--adapter", run / "adapter",
                                      "--data", eval_data, "--ids").splitlines()]
    recs = [(r["chosen_ids"], r["chosen_from"], r["rejected_ids"], r["rejected_from"]) for r in rows]

    def cpp(**kw):
        llm = Llama(n_ctx=512, logits_all=True, verbose=False, seed=0, **kw)
        f = llama_logps(llm)
        out = [(seq_logp(f, c[:cf], c[cf:]), seq_logp(f, r[:rf], r[rf:])) for c, cf, r, rf in recs]
        del llm
        return out

    cpp_base = cpp(model_path=str(model))
    cpp_adapted = cpp(model_path=str(model), lora_path=str(run / "export/gguf-lora/adapter.gguf"))
    base_size = model.stat().st_size
    ok = True
    lines = []
    for q in QUANTS:
        out = work / f"gguf-{q}"
        sh(bin_, "export", "--run", run, "--format", "gguf", "--quant", q, "--out", out, "--force")
        fid = json.loads((out / "fidelity.json").read_text())
        size = (out / "model.gguf").stat().st_size / base_size
        kept, agree, delta = fidelity_of(cpp(model_path=str(out / "model.gguf")), cpp_base, cpp_adapted)
        if q == "keep":
            fid0 = fid
        shutil.rmtree(out)
        verdict = ""
        if q == "keep":
            good = (size <= KEEP_MAX_SIZE and min(fid["kept"], kept) >= KEEP_MIN_KEPT
                    and min(fid["agreement"], agree) >= KEEP_MIN_AGREE)
            verdict = "pass" if good else "FAIL"
            ok &= good
        lines.append(f"| `--quant {q}` | {size:.2f}x | {100 * fid['kept']:.1f} % | "
                     f"{100 * fid['agreement']:.1f} % | {fid['mean_abs_delta']:.2f} | "
                     f"{100 * kept:.1f} % | {100 * agree:.1f} % | {delta:.2f} | {verdict} |")
    report.append(f"## {name}: a trained adapter merged (`{recipe}`, trained here in {trained_s:.0f} s), "
                  f"{len(recs)} held-out pairs\n")
    report.append(f"Base file {base_size / 1e6:.1f} MB. Trained change (base + adapter's margin minus the "
                  f"base's): {fid0['change_adapted']:.1f} nats in dpo-lora; base alone agrees with base + "
                  f"adapter on {100 * fid0['agreement_base']:.0f} % of the pairs. llama.cpp's base + adapter "
                  f"is its base GGUF with the LoRA GGUF. Goal for keep: at most {KEEP_MAX_SIZE}x, "
                  f"at least {100 * KEEP_MIN_KEPT:.0f} % kept and {100 * KEEP_MIN_AGREE:.0f} % agreement in both.\n")
    report.append("| export | size vs base | kept (dpo-lora) | agreement (dpo-lora) | mean abs delta (dpo-lora, nats) "
                  "| kept (llama.cpp) | agreement (llama.cpp) | mean abs delta (llama.cpp, nats) | check |")
    report.append("|---|---|---|---|---|---|---|---|---|")
    report.extend(lines)
    report.append("")
    shutil.rmtree(work)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dpo-lora", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    ap.add_argument("--only-trained", choices=sorted(TRAINED), action="append")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    report = ["# dpo-lora exports in their real clients\n",
              f"Made by `scripts/export-check.sh` on {time.strftime('%Y-%m-%d %H:%M')}: "
              f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
              f"peft {__import__('peft').__version__}, llama-cpp-python {__import__('llama_cpp').__version__}.\n"]
    ok = True
    for name in a.only or sorted(MODELS):
        t0 = time.time()
        ok &= check_model(name, a, report)
        print(f"{name}: {time.time() - t0:.0f} s", file=sys.stderr)
    for name in a.only_trained or ([] if a.only else sorted(TRAINED)):
        t0 = time.time()
        ok &= check_trained(name, a, report)
        print(f"{name} trained: {time.time() - t0:.0f} s", file=sys.stderr)
    Path(a.report).write_text("\n".join(report) + "\n")
    print("\n".join(report))
    if not ok:
        sys.exit("export check FAILED (see the report)")


if __name__ == "__main__":
    main()
