#!/usr/bin/env python3
"""TRL's DPOTrainer + PEFT LoRA on the same model, data and settings as `dpo-lora bench`.

One workload per process, so the peak RSS (ru_maxrss) is this workload's alone. Writes JSON in the
shape of dpo-lora's bench.json (one row, mode "trl-dpo-peft").

    python scripts/bench_trl.py --model-dir runs/bench/hf-smol --data runs/bench/X/workload-long.jsonl \
        --workload long --warmup 3 --steps 5 --out runs/bench/X/trl-long.json

--model-dir is a Hugging Face folder of the same GGUF base, dense f32:
`dpo-lora export --model M.gguf --format hf --base-only --dtype f32 --out DIR`.

Settings shared with dpo-lora bench (src/bench/measure.rs): 2 pairs per step, no accumulation,
max_length 256, LoRA r 8 / alpha 16 / dropout 0 on q,k,v,o,gate,up,down, sigmoid DPO beta 0.1,
AdamW lr 1e-6 constant, max_grad_norm 1.0, the reference = the same model with the adapter
disabled (TRL's PEFT path), pairs in file order. TRL's own defaults otherwise, gradient
checkpointing included (DPOConfig turns it on; --no-gradient-checkpointing turns it off).
Step time: on_step_begin -> on_step_end (forward, backward, optimizer; batch collation
excluded), median over the steps after warm-up.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--data", required=True, help="workload JSONL written by dpo-lora bench")
    ap.add_argument("--workload", required=True, help="its name (long, short), for the row")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--no-gradient-checkpointing",
        action="store_true",
        help="turn off TRL's default gradient checkpointing (DPOConfig defaults it to True)",
    )
    return ap.parse_args()


def main():
    a = parse_args()
    import torch

    torch.set_num_threads(a.threads)
    import datasets
    import peft
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.t0 = None
            self.secs = []

        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.secs.append(time.perf_counter() - self.t0)

    tok = AutoTokenizer.from_pretrained(a.model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    data = datasets.load_dataset("json", data_files=a.data, split="train")
    total = a.warmup + a.steps
    lora = peft.LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        task_type="CAUSAL_LM",
    )
    with tempfile.TemporaryDirectory() as tmp:
        cfg = trl.DPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=1,
            max_steps=total,
            max_length=256,
            beta=0.1,
            loss_type=["sigmoid"],
            learning_rate=1e-6,
            lr_scheduler_type="constant",
            warmup_steps=0,
            max_grad_norm=1.0,
            train_sampling_strategy="sequential",
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            bf16=False,
            fp16=False,
            dataloader_num_workers=0,
            seed=0,
            disable_tqdm=True,
            gradient_checkpointing=not a.no_gradient_checkpointing,
        )
        timer = StepTimer()
        trainer = trl.DPOTrainer(
            model=model,
            args=cfg,
            train_dataset=data,
            processing_class=tok,
            peft_config=lora,
            callbacks=[timer],
        )
        ds = trainer.train_dataset
        per_pair = [
            2 * len(p) + len(c) + len(r)
            for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"])
        ]
        trainer.train()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    secs = timer.secs[a.warmup:]
    if len(timer.secs) != total or not secs:
        sys.exit(f"error: expected {total} timed steps, got {len(timer.secs)}")
    # Step s trains pairs 2s and 2s+1 (sequential sampling), as dpo-lora bench does.
    tokens = [
        per_pair[(2 * s) % len(per_pair)] + per_pair[(2 * s + 1) % len(per_pair)]
        for s in range(a.warmup, total)
    ]
    med = statistics.median(secs)
    tps = sum(tokens) / len(tokens)
    row = {
        "workload": a.workload,
        "mode": "trl-dpo-peft" + ("" if cfg.gradient_checkpointing else "-no-gc"),
        "what": f"TRL {trl.__version__} DPOTrainer + PEFT {peft.__version__} LoRA, transformers "
        f"{transformers.__version__}, torch {torch.__version__}, dense f32, reference = adapter disabled, "
        f"gradient checkpointing {'on (TRL default)' if cfg.gradient_checkpointing else 'off'}",
        "step_s": secs,
        "step_s_median": med,
        "tokens_per_step": tps,
        "tokens_per_s": tps / med,
        "peak_rss_mib": peak_mib,
        "gflop_per_step": None,
        "gflops": None,
        "peak_share": None,
    }
    report = {
        "tool": f"trl {trl.__version__}",
        "model": os.path.basename(os.path.normpath(a.model_dir)),
        "threads": torch.get_num_threads(),
        "settings": {
            "pairs_per_step": 2,
            "max_length": 256,
            "lora_rank": 8,
            "lora_alpha": 16,
            "lora_dropout": 0.0,
            "beta": 0.1,
            "learning_rate": 1e-6,
            "max_grad_norm": 1.0,
            "gradient_checkpointing": cfg.gradient_checkpointing,
            "warmup_steps": a.warmup,
            "measured_steps": a.steps,
        },
        "results": [row],
    }
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(
        f"trl {a.workload}: {med:.3f} s/step, {tps / med:.1f} tokens/s, peak RSS {peak_mib:.0f} MiB",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
