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


def trl_rows(d, workload):
    """TRL's rows for `workload` in folder d: trl-<w>.json (its default, gradient checkpointing on)
    and trl-<w>-no-gc.json."""
    out = []
    for suffix in ("", "-no-gc"):
        p = os.path.join(d, f"trl-{workload}{suffix}.json")
        if os.path.exists(p):
            out.append(load(p)["results"][0])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    md = ["# dpo-lora vs TRL: DPO + LoRA step time and memory", ""]
    ratio_lines = []
    for d in a.dirs:
        ours = load(os.path.join(d, "bench.json"))
        peak = ours["matmul_peak_gflops"]
        size = ours.get("model_file_bytes")
        md += [f"## {ours['model']}" + (f" ({size / 2**20:.0f} MiB file)" if size else ""), ""]
        md += [
            f"{ours['threads']} threads; f32 matrix-product peak (dpo-lora's gemm) "
            f"{peak:.1f} GFLOP/s. Settings: `{json.dumps(ours['settings'])}`.",
            "",
            "| workload | tool / mode | keep | step s (median) | tokens/s | peak RSS MiB | planned MiB "
            "| measured / planned | GFLOP/s | % of matmul peak |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        rows = list(ours["results"])
        by = {}
        for r in ours["results"]:
            by.setdefault((r["workload"], r["mode"]), r)  # the first keep level measured
        trl = {w: trl_rows(d, w) for w in ours["workloads"]}
        for w, ts in trl.items():
            b = by.get((w, OURS))
            for t in ts:
                # TRL's share of the peak: the same step's matrix-product work as counted for
                # dpo-lora (its FLOP count of the same pairs), over TRL's step time.
                if b is not None and b.get("gflop_per_step") and t.get("gflops") is None:
                    t["gflops"] = b["gflop_per_step"] / t["step_s_median"]
                    t["peak_share"] = t["gflops"] / peak
                rows.append(t)
        rows.sort(key=lambda r: r["workload"])
        for r in rows:
            share = None if r.get("peak_share") is None else 100 * r["peak_share"]
            planned = r.get("predicted_peak_mib")
            md.append(
                f"| {r['workload']} | {r['mode']} | {r.get('keep') or '-'} | {r['step_s_median']:.3f} "
                f"| {r['tokens_per_s']:.1f} | {r['peak_rss_mib']:.0f} | {fmt(planned, 0)} "
                f"| {fmt(planned and r['peak_rss_mib'] / planned, 2)} | {fmt(r.get('gflops'), 1)} | {fmt(share, 1)} |"
            )
        md.append("")
        for w, ts in trl.items():
            b = by.get((w, OURS))
            for t in ts:
                if b is None:
                    continue
                line = (
                    f"{ours['model']} {w}: dpo-lora ({OURS}) / TRL ({t['mode']}): step time "
                    f"x{b['step_s_median'] / t['step_s_median']:.2f}, peak RSS x{b['peak_rss_mib'] / t['peak_rss_mib']:.2f}; "
                    f"tokens/s {b['tokens_per_s']:.1f} vs {t['tokens_per_s']:.1f} (x{b['tokens_per_s'] / t['tokens_per_s']:.2f})"
                )
                ratio_lines.append(line)
                md.append(f"- {line}")
        keeps = []
        for r in ours["results"]:
            if r.get("keep") not in keeps:
                keeps.append(r.get("keep"))
        for w in ours["workloads"]:
            for k in keeps:
                at = f" (keep {k})" if len(keeps) > 1 else ""
                get = lambda m: next((r for r in ours["results"]
                                      if r["workload"] == w and r["mode"] == m and r.get("keep") == k), None)
                a_, b, c, s2 = get("policy-only"), get(OURS), get("dpo-precomputed"), get("dpo-second-copy")
                if a_ and b:
                    r = b["peak_rss_mib"] / a_["peak_rss_mib"]
                    md.append(f"- {w}{at}: peak RSS {OURS} / policy-only = {r:.3f} (target <= 1.05: {'holds' if r <= 1.05 else 'does not hold'})")
                if b and size:
                    md.append(f"- {w}{at}: peak RSS {OURS} = {b['peak_rss_mib'] * 2**20 / size:.2f}x the GGUF file")
                if b and s2:
                    md.append(f"- {w}{at}: a second copy of the base as reference costs {s2['peak_rss_mib'] - b['peak_rss_mib']:+.0f} MiB over {OURS}")
                if a_ and c:
                    r = c["step_s_median"] / a_["step_s_median"]
                    md.append(f"- {w}{at}: step time dpo-precomputed / policy-only = {r:.3f} (target <= 1.1: {'holds' if r <= 1.1 else 'does not hold'})")
                if b and b.get("peak_share") is not None:
                    md.append(f"- {w}{at}: a DPO step ({OURS}) reaches {b['gflops']:.1f} GFLOP/s, {100 * b['peak_share']:.1f}% of the matmul peak")
        ratios = [r["peak_rss_mib"] / r["predicted_peak_mib"] for r in ours["results"] if r.get("predicted_peak_mib")]
        if ratios:
            ok = all(abs(x - 1) <= 0.15 for x in ratios)
            md.append(f"- memory plan: measured / planned peak {min(ratios):.2f} to {max(ratios):.2f} over "
                      f"{len(ratios)} rows (target within 15 %: {'holds' if ok else 'does not hold'})")
        for t in (t for ts in trl.values() for t in ts):
            md += ["", f"TRL `{t['mode']}`: {t['what']}."]
        md.append("")
    with open(a.out, "w") as f:
        f.write("\n".join(md))
    for l in ratio_lines:
        print(l)
    print(f"report: {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
