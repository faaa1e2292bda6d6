#!/usr/bin/env python3
"""The shared bundle cache, measured side by side in one run on this machine (a benchmark, not a test).

1. build:  `tsexport apply specs/bert-base-guide.yaml --cache oci://…` in an empty output root: the guide's
           randomly initialised BERT-base is traced, verified, installed and pushed (a miss). The push's own time
           is read from build.json and shown on its own line.
2. cache:  the same apply in a second, empty output root: the fingerprint's tag is found, the bundle pulled (every
           digest checked), verified in a fresh process as if just built, installed. No model is loaded.
3. skopeo: `skopeo copy` of the same artifact from the same registry into a `dir:` folder: the transfer floor.

The registry is Debian's docker-registry on a loopback port, storage in a temporary folder, started and stopped
here. The files of the two roots are compared byte for byte. Usage:
    scripts/bench_cache.py [--binary PATH] [--python PYTHON]
Without --binary, tsexport is built in release mode first (swift build -c release).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "specs/bert-base-guide.yaml"
NAME = "bert-base-guide"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(work: Path, port: int) -> subprocess.Popen[bytes]:
    config = work / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'registry-data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    argv = ["docker-registry", "serve", str(config)]
    if shutil.which("setpriv"):
        argv = ["setpriv", "--pdeathsig", "KILL", "--"] + argv
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("docker-registry did not start")


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    r = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return wall, r.stdout + r.stderr


def content(bundle: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(bundle.iterdir()) if p.is_file() and p.name not in ("build.json", "bench.html")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", help="the tsexport executable (default: build release)")
    ap.add_argument("--python", default=os.environ.get("TSEXPORT_PYTHON"), help="the worker's Python (default: $TSEXPORT_PYTHON)")
    args = ap.parse_args()
    for tool in ("docker-registry", "skopeo"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (scripts/bootstrap --test installs it)")
    binary = args.binary
    if not binary:
        subprocess.run(["swift", "build", "-c", "release", "--product", "tsexport"], cwd=REPO, check=True)
        binary = str(REPO / ".build/release/tsexport")
    work = Path(tempfile.mkdtemp(prefix="tsx-bench-cache-"))
    port = free_port()
    host = f"127.0.0.1:{port}"
    registry = start_registry(work, port)
    env = dict(os.environ, HF_HUB_OFFLINE="1", DOCKER_CONFIG=str(work / "no-docker-config"))
    env.pop("TSEXPORT_CACHE", None)
    if args.python:
        env["TSEXPORT_PYTHON"] = args.python
    cache = ["--cache", f"oci://{host}/bench/cache", "--registry-insecure", host]
    try:
        build_wall, build_out = timed([binary, "apply", str(MANIFEST), "--output-root", str(work / "a")] + cache, env, REPO)
        a = work / "a/build" / NAME
        build_json = json.loads((a / "build.json").read_text())
        push = build_json.get("cache", {})
        if push.get("result") != "pushed":
            raise SystemExit(f"the first apply did not push: {push}\n{build_out}")
        cached_wall, cached_out = timed([binary, "apply", str(MANIFEST), "--output-root", str(work / "b")] + cache, env, REPO)
        b = work / "b/build" / NAME
        served = json.loads((b / "build.json").read_text())
        if served.get("cache", {}).get("result") != "pulled":
            raise SystemExit(f"the second apply was not served from the cache:\n{cached_out}")
        identical = content(a) == content(b)
        tag = "fp-" + json.loads((a / "record.json").read_text())["fingerprint"].split(":")[-1]
        skopeo_wall, _ = timed(["skopeo", "copy", "--src-tls-verify=false", f"docker://{host}/bench/cache:{tag}",
                                f"dir:{work / 'skopeo'}"], env, REPO)
        size = sum(len(v) for v in content(a).values())
    finally:
        registry.kill()
        registry.wait()
    timings = served.get("timings_ms", {})
    print(f"BERT-base ({size / 1e6:.0f} MB of bundle content), loopback docker-registry, tsexport {binary}")
    print(f"{'step':<44} {'seconds':>8} {'x build':>8} {'x skopeo':>9}")

    def row(label: str, s: float) -> None:
        print(f"{label:<44} {s:8.2f} {s / build_wall:8.3f} {s / skopeo_wall:9.2f}")

    row("apply that builds (trace, verify, push)", build_wall)
    row("  of which the verification (fresh process)", build_json.get("timings_ms", {}).get("verify", 0.0) / 1000)
    row("  of which the push to the cache", float(push.get("seconds", 0.0)))
    row("apply served from the cache (second root)", cached_wall)
    row("  of which the pull (every digest checked)", timings.get("pull", 0.0) / 1000)
    row("  of which the verification (fresh process)", timings.get("verify", 0.0) / 1000)
    row("skopeo copy of the same artifact (dir:)", skopeo_wall)
    print(f"byte-identical bundle files in the two roots: {identical}")
    print(f"goals: cache <= 0.1x build: {cached_wall / build_wall:.3f}; cache <= 1.5x skopeo copy: {cached_wall / skopeo_wall:.2f}")
    shutil.rmtree(work, ignore_errors=True)
    if not identical:
        sys.exit(1)


if __name__ == "__main__":
    main()
