#!/usr/bin/env python3
"""Benchmark: `tsexport validate DIR` against PyYAML (C loader) + jsonschema over the same 1,000 manifests.

Not a test: it prints figures and whether the targets hold (tsexport <= 0.5 s and <= 0.2x the Python time).

  scripts/bench_validate.py [--count 1000] [--repeat 7] [--scratch-path DIR] [--no-build] [--keep] [--compare EXE]

Steps: generate COUNT small, valid, varied manifests (25-40 lines each, like specs/*.yaml) in a temporary folder;
build tsexport in release mode (`swift build -c release`); check both sides accept every file; then time, side by
side and alternating, (a) `tsexport validate DIR` (one process, all files) and (b) one Python process that loads
each file with yaml.load(f, Loader=yaml.CSafeLoader) and validates it with jsonschema's Draft202012Validator (the
schema compiled once). The Python figure is its full wall time including interpreter start and imports; the time
after imports (measured inside the process) is reported too. Medians of REPEAT runs. tsexport loads the files in
parallel on every core. --compare EXE times a second tsexport (say, an older build) in the same alternating runs.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "schemas" / "export.schema.json"

# The Python side, run as its own process so interpreter start and imports are counted.
PY_VALIDATOR = r'''
import sys, time
t_start = time.perf_counter()
import json, os
import yaml
import jsonschema
t_imported = time.perf_counter()
schema_path, folder = sys.argv[1], sys.argv[2]
with open(schema_path, "rb") as f:
    schema = json.load(f)
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
files = []
for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    files += [os.path.join(dirpath, n) for n in filenames
              if not n.startswith(".") and (n.endswith(".yaml") or n.endswith(".yml"))]
files.sort()
errors = 0
for path in files:
    with open(path, "rb") as f:
        doc = yaml.load(f, Loader=yaml.CSafeLoader)
    for e in validator.iter_errors(doc):
        errors += 1
        print(f"{path}: {e.message}", file=sys.stderr)
t_end = time.perf_counter()
print(json.dumps({"files": len(files), "errors": errors, "after_imports": t_end - t_imported, "imports": t_imported - t_start}))
sys.exit(1 if errors else 0)
'''

CLASSES = [
    ("BertModel", "bert"), ("BertForMaskedLM", "bert"), ("BertForSequenceClassification", "bert"),
    ("DistilBertModel", "distilbert"), ("DistilBertForQuestionAnswering", "distilbert"),
    ("RobertaModel", "roberta"), ("ElectraModel", "electra"), ("AlbertModel", "albert"),
]
HARDWARE = ["cpu", "cpu", "cpu", "cuda", "inf1", "inf2"]
OPTIMIZE = ["none", "none", "freeze", "optimize_for_inference"]
DTYPES = ["float32", "float32", "float32", "float16", "bfloat16"]
TEAMS = ["search", "ranking", "ads", "qa", "nlp"]


def manifest(i: int, rng: random.Random) -> str:
    """One valid manifest, 25-40 lines, varied in every section."""
    cls, family = rng.choice(CLASSES)
    name = f"{family}-{i:04d}"
    heads = rng.choice([2, 4, 8])
    hidden = heads * rng.choice([8, 16, 32])
    vocab = rng.choice([100, 1000, 30522])
    layers = rng.randint(1, 6)
    batch = rng.choice([1, 1, 2])
    seq = rng.randint(4, 16)
    lines = [
        f"# Generated benchmark manifest {i}: {cls}, {layers} layers.",
        "apiVersion: tsexport/v1",
        "kind: Export",
        "metadata:",
        f"  name: {name}",
        f"  labels: {{team: {rng.choice(TEAMS)}, size: {'tiny' if hidden < 128 else 'small'}}}",
        "spec:",
        "  model:",
        f"    class: {cls}",
        "    config:",
        f"      vocab_size: {vocab}",
        f"      hidden_size: {hidden}",
        f"      num_hidden_layers: {layers}",
        f"      num_attention_heads: {heads}",
        f"      intermediate_size: {hidden * 4}",
    ]
    if rng.random() < 0.3:
        lines.append("      max_position_embeddings: 512")
    lines += [f"    seed: {rng.randint(0, 10_000)}", f"    dtype: {rng.choice(DTYPES)}"]
    if rng.random() < 0.2:
        lines.append("    torchscript: true")
    lines += ["  inputs:"]
    use_text = rng.random() < 0.25
    if use_text:
        lines += [
            "    tokenizer: bert-base-uncased",
            '    text: "[CLS] Who was Jim Henson ? [SEP] Jim Henson was a puppeteer [SEP]"',
            "    mask: [8]",
            "    pad_to: 16",
            "    tensors:",
            "      - name: input_ids",
            "        from: text",
            "      - name: attention_mask",
            "        from: text",
        ]
        seq = 16
        batch = 1
    else:
        ids = [rng.randint(1, vocab - 1) for _ in range(seq)]
        lines += [
            "    tensors:",
            "      - name: input_ids",
            "        from: values",
            f"        values: [{', '.join('[' + ', '.join(map(str, ids)) + ']' for _ in range(batch))}]",
            "      - name: attention_mask",
            "        from: ones",
            f"        shape: [{batch}, {seq}]",
        ]
    if family == "bert" and rng.random() < 0.6:
        # Flow style here, block style above: both forms occur in real manifests.
        if use_text:
            lines.append("      - {name: token_type_ids, from: values, values: [[" + ", ".join(["0"] * 7 + ["1"] * 9) + "]]}")
        else:
            lines.append(f"      - {{name: token_type_ids, from: zeros, shape: [{batch}, {seq}], dtype: int64}}")
    lines += ["  trace:", f"    strict: {rng.choice(['true', 'false'])}"]
    if rng.random() < 0.7:
        lines += ["    check_shapes:"] + [f"      - [{rng.randint(1, 4)}, {rng.randint(2, 64)}]" for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.5:
        lines.append(f"    tolerance: {{atol: 1.0e-{rng.randint(3, 6)}, rtol: 1.0e-{rng.randint(2, 5)}}}")
    # Valid combinations only: Neuron targets take no torch.jit optimisation and no Triton deploy.
    hardware = rng.choice(HARDWARE)
    neuron = hardware in ("inf1", "inf2")
    optimize = "none" if neuron else rng.choice(OPTIMIZE)
    if rng.random() < 0.5:
        lines += ["  target:", f"    hardware: {hardware}", f"    optimize: {optimize}"]
    else:
        lines.append(f"  target: {{hardware: {hardware}, optimize: {optimize}}}")
    lines += ["  output:", f"    dir: build/{rng.choice(TEAMS)}/{name}"]
    r = rng.random()
    if r < 0.3 and not neuron:
        lines += ["    deploy:", "      - kind: directory", "      - {kind: triton, repository: build/triton}"]
    elif r < 0.5:
        lines += ["    deploy:", "      - kind: torchserve", "        store: build/model-store"]
    return "\n".join(lines) + "\n"


def generate(folder: Path, count: int, seed: int = 20240611) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    for i in range(count):
        text = manifest(i, rng)
        sub = folder / f"group-{i % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"m{i:04d}.yaml").write_text(text)
        sizes.append(text.count("\n"))
    return sizes


def build(scratch: str | None) -> Path:
    cmd = ["swift", "build", "-c", "release", "--product", "tsexport"]
    if scratch:
        cmd += ["--scratch-path", scratch]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)
    bin_dir = subprocess.run(cmd + ["--show-bin-path"], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()
    exe = Path(bin_dir) / "tsexport"
    if not exe.exists():
        sys.exit(f"no tsexport at {exe}")
    return exe


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t, p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--scratch-path", default=os.environ.get("TSEXPORT_BENCH_SCRATCH"))
    ap.add_argument("--no-build", action="store_true", help="use the release binary already built")
    ap.add_argument("--exe", help="time this tsexport executable instead of building one")
    ap.add_argument("--keep", action="store_true", help="keep the generated manifests")
    ap.add_argument("--compare", help="also time this tsexport executable (e.g. an older build), alternating")
    args = ap.parse_args()
    if args.repeat < 5:
        ap.error("--repeat must be at least 5")

    if args.exe:
        exe = Path(args.exe).resolve()
    elif args.no_build:
        cmd = ["swift", "build", "-c", "release", "--show-bin-path"] + (["--scratch-path", args.scratch_path] if args.scratch_path else [])
        exe = Path(subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()) / "tsexport"
    else:
        exe = build(args.scratch_path)

    work = Path(tempfile.mkdtemp(prefix="tsexport-bench-"))
    try:
        folder = work / "manifests"
        sizes = generate(folder, args.count)
        validator = work / "pyvalidate.py"
        validator.write_text(PY_VALIDATOR)
        total_bytes = sum(p.stat().st_size for p in folder.rglob("*.yaml"))
        print(f"{args.count} manifests, {min(sizes)}-{max(sizes)} lines each (mean {statistics.mean(sizes):.1f}), "
              f"{total_bytes / 1024:.0f} KiB, in {folder}")
        print(f"tsexport: {exe}")
        print(f"python:   {sys.executable} {sys.version.split()[0]}")

        ts_cmd = [str(exe), "validate", str(folder)]
        cmp_cmd = [str(Path(args.compare).resolve()), "validate", str(folder)] if args.compare else None
        py_cmd = [sys.executable, str(validator), str(SCHEMA), str(folder)]

        # Both must accept every file before any timing counts.
        _, p = timed(ts_cmd, work)
        if p.returncode != 0:
            print(p.stderr[-3000:], file=sys.stderr)
            sys.exit(f"tsexport validate rejected the generated manifests (exit {p.returncode})")
        print("tsexport: " + p.stderr.strip().splitlines()[-1])
        _, p = timed(py_cmd, work)
        if p.returncode != 0:
            print(p.stderr[-3000:], file=sys.stderr)
            sys.exit(f"the Python validator rejected the generated manifests (exit {p.returncode})")

        import json
        if cmp_cmd:
            _, p = timed(cmp_cmd, work)
            if p.returncode != 0:
                sys.exit(f"--compare {args.compare} rejected the generated manifests (exit {p.returncode})")
        ts_times, py_times, py_after, py_imports, cmp_times = [], [], [], [], []
        for i in range(args.repeat):
            order = [("ts", ts_cmd), ("py", py_cmd)] + ([("cmp", cmp_cmd)] if cmp_cmd else [])
            if i % 2:
                order.reverse()
            for kind, cmd in order:
                t, p = timed(cmd, work)
                if p.returncode != 0:
                    sys.exit(f"{kind} failed on run {i}: {p.stderr[-2000:]}")
                if kind == "ts":
                    ts_times.append(t)
                elif kind == "cmp":
                    cmp_times.append(t)
                else:
                    py_times.append(t)
                    info = json.loads(p.stdout)
                    py_after.append(info["after_imports"])
                    py_imports.append(info["imports"])

        ts, py, pya, pyi = (statistics.median(x) for x in (ts_times, py_times, py_after, py_imports))
        print()
        print(f"runs: {args.repeat} each, alternating; medians (min-max)")
        print(f"  (a) tsexport validate DIR        {ts * 1000:8.1f} ms  ({min(ts_times) * 1000:.1f}-{max(ts_times) * 1000:.1f})")
        print(f"  (b) python yaml+jsonschema, wall {py * 1000:8.1f} ms  ({min(py_times) * 1000:.1f}-{max(py_times) * 1000:.1f})")
        print(f"      of which imports             {pyi * 1000:8.1f} ms")
        print(f"      excluding imports            {pya * 1000:8.1f} ms  ({min(py_after) * 1000:.1f}-{max(py_after) * 1000:.1f})")
        print(f"  per file: tsexport {ts / args.count * 1e6:.0f} us, python {pya / args.count * 1e6:.0f} us (excluding imports)")
        ratio, ratio_ex = ts / py, ts / pya
        print(f"  ratio tsexport/python: {ratio:.3f} (wall), {ratio_ex:.3f} (python excluding imports)")
        if cmp_times:
            c = statistics.median(cmp_times)
            print(f"  (c) --compare {args.compare}: {c * 1000:.1f} ms ({min(cmp_times) * 1000:.1f}-{max(cmp_times) * 1000:.1f}), "
                  f"ratio to python {c / py:.3f} (wall); (a) is {ts / c:.2f}x of it")
        ok_abs, ok_rel = ts <= 0.5, ratio <= 0.2
        print(f"  target tsexport <= 0.5 s:        {'HOLDS' if ok_abs else 'MISSED'} ({ts:.3f} s)")
        print(f"  target tsexport <= 0.2 x python: {'HOLDS' if ok_rel else 'MISSED'} ({ratio:.3f} x wall)")
        return 0 if ok_abs and ok_rel else 3
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
