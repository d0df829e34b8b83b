#!/usr/bin/env python3
"""Side-by-side report of `dpo-lora bench` and scripts/bench_trl.py (run by scripts/bench.sh).

    python scripts/bench_report.py --out runs/bench/report.md runs/bench/SmolLM2-... runs/bench/gemma-...

Each folder holds dpo-lora's bench.json and TRL's trl-<workload>.json. The comparison row of
dpo-lora is `dpo-adapters-off`: like TRL with PEFT, the reference is the same model with the
adapter off, computed at every step. Ratios are dpo-lora / TRL (step time and peak RSS: below 1 is
better for dpo-lora; tokens/s: above 1).
"""

import argparse
import json
import os
import sys

OURS = "dpo-adapters-off"


def load(path):
    with open(path) as f:
        return json.load(f)


def fmt(v, prec):
    return "-" if v is None else f"{v:.{prec}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    md = ["# dpo-lora vs TRL: DPO + LoRA step time and memory", ""]
    ratio_lines = []
    for d in a.dirs:
        ours = load(os.path.join(d, "bench.json"))
        md += [f"## {ours['model']}", ""]
        md += [
            f"{ours['threads']} threads; f32 matrix-product peak (dpo-lora's gemm) "
            f"{ours['matmul_peak_gflops']:.1f} GFLOP/s. Settings: `{json.dumps(ours['settings'])}`.",
            "",
            "| workload | tool / mode | step s (median) | tokens/s | peak RSS MiB | GFLOP/s | % of matmul peak |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = list(ours["results"])
        trl = {}
        for w in ours["workloads"]:
            p = os.path.join(d, f"trl-{w}.json")
            if os.path.exists(p):
                r = load(p)["results"][0]
                trl[w] = r
                rows.append(r)
        rows.sort(key=lambda r: r["workload"])
        for r in rows:
            share = None if r.get("peak_share") is None else 100 * r["peak_share"]
            md.append(
                f"| {r['workload']} | {r['mode']} | {r['step_s_median']:.3f} | {r['tokens_per_s']:.1f} "
                f"| {r['peak_rss_mib']:.0f} | {fmt(r.get('gflops'), 1)} | {fmt(share, 1)} |"
            )
        md.append("")
        by = {(r["workload"], r["mode"]): r for r in ours["results"]}
        for w, t in trl.items():
            b = by.get((w, OURS))
            if b is None:
                continue
            line = (
                f"{ours['model']} {w}: dpo-lora ({OURS}) / TRL: step time x{b['step_s_median'] / t['step_s_median']:.2f}, "
                f"peak RSS x{b['peak_rss_mib'] / t['peak_rss_mib']:.2f}; tokens/s {b['tokens_per_s']:.1f} vs "
                f"{t['tokens_per_s']:.1f} (x{b['tokens_per_s'] / t['tokens_per_s']:.2f})"
            )
            ratio_lines.append(line)
            md.append(f"- {line}")
        for w in ours["workloads"]:
            a_ = by.get((w, "policy-only"))
            b = by.get((w, OURS))
            c = by.get((w, "dpo-precomputed"))
            if a_ and b:
                r = b["peak_rss_mib"] / a_["peak_rss_mib"]
                md.append(f"- {w}: peak RSS {OURS} / policy-only = {r:.3f} (target <= 1.05: {'holds' if r <= 1.05 else 'does not hold'})")
            if a_ and c:
                r = c["step_s_median"] / a_["step_s_median"]
                md.append(f"- {w}: step time dpo-precomputed / policy-only = {r:.3f} (target <= 1.1: {'holds' if r <= 1.1 else 'does not hold'})")
            if b and b.get("peak_share") is not None:
                md.append(f"- {w}: a DPO step ({OURS}) reaches {b['gflops']:.1f} GFLOP/s, {100 * b['peak_share']:.1f}% of the matmul peak")
        if trl:
            md += ["", f"TRL: {next(iter(trl.values()))['what']}."]
        md.append("")
    with open(a.out, "w") as f:
        f.write("\n".join(md))
    for l in ratio_lines:
        print(l)
    print(f"report: {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
