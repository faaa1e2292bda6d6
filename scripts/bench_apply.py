#!/usr/bin/env python3
"""Side-by-side benchmarks for `tsexport apply`, measured in one run on this machine.

1. The guide's example: `tsexport apply specs/bert-base-guide.yaml` (verification on) against the guide's plain
   trace-and-save script run by the same Python: wall time and peak memory of all processes (the sum of the RSS of
   every process in the tree, sampled every 20 ms), plus where tsexport's time goes (from the record's timings).
2. Eight small manifests in one apply against the plain script once per model (same Python).
3. A no-op apply of 24 up-to-date manifests.

Usage: scripts/bench_apply.py [--python PYTHON] [--repeat N]. Builds tsexport in release mode first.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

GUIDE_SCRIPT = """
import torch
from transformers import BertConfig, BertModel
# The guide's example, as written there (segment ids fixed to the 14 tokens of the sentence).
tokens_tensor = torch.tensor([[101, 2040, 2001, 3958, 27227, 1029, 102, 3958, 103, 2001, 1037, 13997, 11510, 102]])
segments_tensors = torch.tensor([[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]])
config = BertConfig(vocab_size=32000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, torchscript=True)
model = BertModel(config)
model.eval()
traced_model = torch.jit.trace(model, [tokens_tensor, segments_tensors], strict=False)
torch.jit.save(traced_model, OUT)
"""

SMALL_SCRIPT = """
import torch
from transformers import BertConfig, BertModel
torch.manual_seed(SEED)
config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                    torchscript=True)
model = BertModel(config).eval()
ids = torch.randint(0, 100, (1, 8))
traced = torch.jit.trace(model, [ids, torch.zeros_like(ids)], strict=False)
torch.jit.save(traced, OUT)
"""


def small_manifest(name: str, seed: int) -> str:
    return f"""apiVersion: tsexport/v1
kind: Export
metadata: {{name: {name}}}
spec:
  model: {{class: BertModel, seed: {seed}, config: {{vocab_size: 100, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 37}}}}
  inputs:
    tensors:
      - {{name: input_ids, from: random, shape: [1, 8]}}
      - {{name: token_type_ids, from: zeros, shape: [1, 8]}}
"""


def tree_rss_kb(root: int) -> int:
    """The summed RSS of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid = int(fields[1])
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss[int(entry)] = int(line.split()[1])
                        break
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(argv: list[str], env: dict[str, str], cwd: str | None = None,
            also: tuple[int, ...] = ()) -> tuple[float, int, str]:
    """Wall seconds, peak summed RSS (MiB) of the process tree (and of the trees of `also`, such as a warm worker
    process that forks the command's workers), and the combined output."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_kb(proc.pid) + sum(tree_rss_kb(pid) for pid in also))
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed ({proc.returncode}):\n{out[-3000:]}")
    return wall, peak // 1024, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=os.environ.get("TSEXPORT_PYTHON", shutil.which("python3") or "python3"))
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    subprocess.run(["swift", "build", "-c", "release", "--product", "tsexport"], cwd=REPO, check=True)
    binary = str(REPO / ".build/release/tsexport")
    env = dict(os.environ, TSEXPORT_PYTHON=args.python, NO_COLOR="1", HF_HUB_OFFLINE="1")
    work = Path(tempfile.mkdtemp(prefix="tsexport-bench-"))
    try:
        # 1. The guide's example.
        rows = []
        for i in range(args.repeat):
            out_root = work / f"guide-{i}"
            a = measure([binary, "apply", str(REPO / "specs/bert-base-guide.yaml"), "--output-root", str(out_root)], env)
            script = GUIDE_SCRIPT.replace("OUT", repr(str(work / f"guide-{i}.pt")))
            b = measure([args.python, "-c", script], env)
            rows.append((a[0], a[1], b[0], b[1]))
            record = json.loads((out_root / "build/bert-base-guide/record.json").read_text())
        wall_a = statistics.median(r[0] for r in rows)
        mem_a = statistics.median(r[1] for r in rows)
        wall_b = statistics.median(r[2] for r in rows)
        mem_b = statistics.median(r[3] for r in rows)
        print(f"guide example (median of {args.repeat}):")
        print(f"  tsexport apply (verify on):  {wall_a:6.2f} s   peak {mem_a:5d} MiB (all processes)")
        print(f"  plain trace-and-save script: {wall_b:6.2f} s   peak {mem_b:5d} MiB")
        print(f"  ratio: wall {wall_a / wall_b:.2f}x (target <= 1.3x), memory {mem_a / mem_b:.2f}x (target <= 1.3x)")
        print(f"  tsexport stage timings of the last run (ms): {json.dumps(record['timings_ms'])}")

        # 2. Eight small manifests in one apply vs the plain script once per model.
        specs = work / "small"
        specs.mkdir()
        (specs / "eight.yaml").write_text("---\n".join(small_manifest(f"small-{i}", i) for i in range(8)))
        rows = []
        for i in range(args.repeat):
            a = measure([binary, "apply", str(specs), "--output-root", str(work / f"small-{i}")], env)
            start = time.perf_counter()
            for s in range(8):
                script = SMALL_SCRIPT.replace("SEED", str(s)).replace("OUT", repr(str(work / f"small-{i}-{s}.pt")))
                measure([args.python, "-c", script], env)
            rows.append((a[0], time.perf_counter() - start))
        wall_a = statistics.median(r[0] for r in rows)
        wall_b = statistics.median(r[1] for r in rows)
        print(f"eight small manifests (median of {args.repeat}):")
        print(f"  tsexport apply (one run, warm workers, verify on): {wall_a:6.2f} s")
        print(f"  plain script once per model:                        {wall_b:6.2f} s")
        print(f"  ratio: {wall_a / wall_b:.2f}x (target <= 0.4x)")

        # 3. No-op apply of 24 up-to-date manifests.
        many = work / "many"
        many.mkdir()
        (many / "m.yaml").write_text("---\n".join(small_manifest(f"noop-{i}", i) for i in range(24)))
        noop_root = work / "noop"
        measure([binary, "apply", str(many), "--output-root", str(noop_root)], env)
        times = []
        for _ in range(max(5, args.repeat)):
            w, _, out = measure([binary, "apply", str(many), "--output-root", str(noop_root)], dict(env, TSEXPORT_PYTHON="/bin/false"))
            assert "24 up to date" in out, out
            times.append(w)
        print(f"no-op apply of 24 up-to-date manifests: median {statistics.median(times) * 1000:.0f} ms (target <= 300 ms), "
              "with TSEXPORT_PYTHON=/bin/false (no Python started)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
