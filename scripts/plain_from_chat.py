#!/usr/bin/env python3
"""Turn conversational preference records into plain-text ones, for base models without a chat
template (Gemma 3 270M): prompt "Question: <user text>\\nAnswer:", completions " <assistant text>".

    python3 scripts/plain_from_chat.py recipes/data/quickstart-train.jsonl recipes/data/quickstart-plain-train.jsonl
"""
import json
import sys


def text(msgs, role):
    parts = [m["content"] for m in msgs if m["role"] == role]
    if len(parts) != 1:
        sys.exit(f"expected one {role} message, got {len(parts)}")
    return parts[0]


def main(src, dst):
    with open(src) as f, open(dst, "w") as out:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            out.write(json.dumps({
                "prompt": f"Question: {text(r['prompt'], 'user')}\nAnswer:",
                "chosen": " " + text(r["chosen"], "assistant"),
                "rejected": " " + text(r["rejected"], "assistant"),
            }) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
