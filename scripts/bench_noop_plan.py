#!/usr/bin/env python3
"""The no-op `tsexport plan` over 24 manifests whose bundles are BERT-base-sized, with the file-digest cache cold and
warm, beside the hashing floor (`sha256sum` of the same files).

The 24 bundles are real: 24 tiny BertModel manifests are applied for real; then, to give them BERT-base size without
24 BERT-base exports on these cores, each bundle's model.pt is replaced by a copy of one file of random bytes the
size of a BERT-base model.pt (438 MB), and record.json (model_sha256, model_bytes) and build.json (files, content
digest) are rewritten to match. `plan` then reads real bundles whose state says "up to date": every file of every
bundle is checked against build.json, which is what is measured. Disk: about 10.5 GB under the work folder.

Usage: scripts/bench_noop_plan.py [--python PYTHON] [--work DIR] [--keep] [--runs N]
Uses .build/release/tsexport (builds it when missing).
"""
from __future__ import annotations

import argparse
import hashlib
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
COUNT = 24
MODEL_BYTES = 438_000_000

MANIFEST = """apiVersion: tsexport/v1
kind: Export
metadata: {{name: {name}}}
spec:
  model: {{class: BertModel, seed: {seed}, config: {{vocab_size: 100, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 37}}}}
  inputs:
    tensors:
      - {{name: input_ids, from: random, shape: [1, 8]}}
"""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rewrite_build(bundle: Path) -> None:
    """build.json's files and content digest for the bundle as it is now (BundleContent's format)."""
    build = json.loads((bundle / "build.json").read_text())
    files = sorted(
        (str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file() and str(p.relative_to(bundle)) != "build.json"),
        key=lambda s: s.encode(),
    )
    entries = [{"path": f, "sha256": sha256(bundle / f), "size": (bundle / f).stat().st_size} for f in files]
    lines = "".join(f"{e['sha256']} {e['size']} {e['path']}\n" for e in entries)
    build["files"] = entries
    build["content_digest"] = "sha256:" + hashlib.sha256(lines.encode()).hexdigest()
    (bundle / "build.json").write_text(json.dumps(build, indent=2) + "\n")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=os.environ.get("TSEXPORT_PYTHON", "python3"))
    parser.add_argument("--work", default=None, help="folder for the manifests and bundles (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    binary = REPO / ".build/release/tsexport"
    if not binary.exists():
        subprocess.run(["swift", "build", "-c", "release", "--product", "tsexport"], cwd=REPO, check=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tsexport-noop-plan-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TSEXPORT_PYTHON": args.python, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    specs, root = work / "specs", work / "out"
    specs.mkdir(exist_ok=True)
    try:
        for i in range(COUNT):
            (specs / f"m{i:02d}.yaml").write_text(MANIFEST.format(name=f"noop-{i:02d}", seed=i))
        print(f"applying {COUNT} tiny manifests for real ...", flush=True)
        subprocess.run([str(binary), "apply", str(specs), "--output-root", str(root), "--jobs", "2"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        weights = work / "weights.bin"
        with open(weights, "wb") as handle:
            for _ in range(MODEL_BYTES // (1 << 20)):
                handle.write(os.urandom(1 << 20))
            handle.write(os.urandom(MODEL_BYTES % (1 << 20)))
        weights_sha = sha256(weights)
        print(f"giving each bundle a {MODEL_BYTES / 1e6:.0f} MB model.pt ...", flush=True)
        bundles = sorted((root / "build").iterdir())
        for bundle in bundles:
            shutil.copyfile(weights, bundle / "model.pt")
            record = json.loads((bundle / "record.json").read_text())
            record["model_sha256"], record["model_bytes"] = weights_sha, MODEL_BYTES
            (bundle / "record.json").write_text(json.dumps(record, indent=2) + "\n")
            rewrite_build(bundle)
        weights.unlink()
        time.sleep(3)  # the digest cache does not remember files changed within 2 s of being hashed
        files = [str(p) for b in bundles for p in sorted(b.rglob("*")) if p.is_file()]
        total = sum(os.path.getsize(f) for f in files)
        plan = [str(binary), "plan", str(specs), "--output-root", str(root), "--detailed-exitcode"]
        # Floors: coreutils sha256sum (no SHA-NI in Debian's build) and OpenSSL (SHA-NI where the CPU has it), each
        # reading every file of every bundle once, single-threaded like the plan.
        floor, openssl, cold, warm = [], [], [], []
        for _ in range(max(1, args.runs // 2)):
            floor.append(timed(["sha256sum", *files], env)[0])
            if shutil.which("openssl"):
                openssl.append(timed(["openssl", "dgst", "-sha256", *files], env)[0])
            (root / ".tsexport/digests.json").unlink(missing_ok=True)
            seconds, out = timed(plan, env)
            if f"{COUNT} up to date" not in out:
                sys.exit(f"the plan is not a no-op:\n{out}")
            cold.append(seconds)
        for _ in range(args.runs):
            warm.append(timed(plan, env)[0])
        result = {
            "manifests": COUNT, "files": len(files), "bytes": total,
            "sha256sum_floor_s": min(floor), "openssl_floor_s": min(openssl) if openssl else None,
            "cold_plan_s": min(cold), "cold_over_sha256sum": min(cold) / min(floor),
            "cold_over_fastest_floor": min(cold) / min(floor + openssl),
            "warm_plan_s_min": min(warm), "warm_plan_s_median": statistics.median(warm),
            "runs": {"sha256sum": floor, "openssl": openssl, "cold": cold, "warm": warm},
        }
        print(json.dumps(result, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
