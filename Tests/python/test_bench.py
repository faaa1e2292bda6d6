"""The bench op (bench.py, bench_eager.py, bench_timing.py): both sides' percentiles per shape, the padding
comparison, the report and its numbers, and a bundle whose eager model the request says cannot be rebuilt. No
assertion depends on how fast anything ran."""

from __future__ import annotations

import html.parser
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from workerkit import TINY_BERT, Worker, bench_request, make_job, random_ids, run_export

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = REPO / "specs" / "tokenizers" / "tiny-bert"
GUIDE_TEXT = "[CLS] Who was Jim Henson ? [SEP] Jim Henson was a puppeteer [SEP]"
STAT_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "runs")
# bundle folder -> the eager model the Swift side would send for it (the export job's model keys)
EAGER: dict[str, dict[str, Any]] = {}


def export_bundle(
    bundle: Path, model: dict[str, Any], *, job_model: dict[str, Any] | None = None, manifest_file: str = "m.yaml",
    manifest_dir: str | None = None, files: dict[str, str] | None = None, **job: Any,
) -> dict[str, Any]:
    """Export with the worker and write record.json the way the Swift side does (the fields bench reads)."""
    manifest = {"apiVersion": "tsexport/v1", "kind": "Export", "metadata": {"name": "tiny-bench"},
                "spec": {"model": model}}
    extra = {"fingerprint_inputs": {"manifest": manifest, "files": files or {}, "versions": {}},
             "manifest_file": manifest_file}
    if manifest_dir is not None:
        extra["manifest_dir"] = manifest_dir
    export_job = make_job(bundle, cls=model["class"], config=model.get("config"), model=job_model,
                          extra_record=extra, **job)
    data = run_export(export_job)
    EAGER[str(bundle)] = {**export_job["model"], "attn_implementation": data["attn_implementation"]}
    record = {**extra, **{k: data[k] for k in ("model_class", "input_signature", "output_signature", "cases")},
              "attn_implementation": data["attn_implementation"]}
    (bundle / "record.json").write_text(json.dumps(record))
    return data


def recorded_shapes(bundle: str) -> list[list[int]]:
    """The recorded cases' shapes, traced first: what `tsexport bench` sends without --lengths."""
    record = json.loads((Path(bundle) / "record.json").read_text())
    shapes: list[list[int]] = []
    for case in record["cases"]:
        if case["shape"] not in shapes:
            shapes.append(case["shape"])
    return shapes


def run_bench(**fields: Any) -> dict[str, Any]:
    """Bench in-process with a full request: the recorded shapes and the exported model's eager side unless given."""
    from tsexport_worker.bench.bench import bench, parse_bench_request

    bundle = fields.pop("dir")
    defaults: dict[str, Any] = {"shapes": recorded_shapes(bundle)}
    if "eager" not in fields:
        defaults["eager"] = {"model": EAGER[bundle]}
    return bench(parse_bench_request(bench_request(bundle, **{**defaults, **fields})))


class ReportParser(html.parser.HTMLParser):
    """The plotted points and the embedded data block of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.points: list[dict[str, str]] = []
        self.data_text = ""
        self.in_data = False
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "circle" and "point" in a.get("class", ""):
            self.points.append(a)
        if tag == "script":
            if "src" in a:
                self.external.append(a["src"])
            self.in_data = a.get("id") == "tsexport-bench-data"
        if tag in ("link", "img", "iframe") or (tag != "a" and any(k in ("src", "href") for k in a)):
            self.external.append(f"{tag} {a}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_data = False

    def handle_data(self, data: str) -> None:
        if self.in_data:
            self.data_text += data


def parse_report(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def check_report_matches(report: Path, data: dict[str, Any]) -> ReportParser:
    """Every measured point is plotted with the JSON's numbers, and the embedded data block is the JSON."""
    parsed = parse_report(report)
    assert parsed.external == []
    embedded = json.loads(parsed.data_text)
    assert embedded["shapes"] == data["shapes"]
    assert embedded["padding"] == data["padding"]
    assert embedded["eager"] == data["eager"]
    plotted = {(p["data-plot"], p["data-series"], int(p["data-batch"]), int(p["data-length"])): p
               for p in parsed.points}
    expected = {}
    for row in data["shapes"]:
        for side in ("artifact", "eager"):
            if row[side] and "p50_ms" in row[side]:
                expected[("latency", side, row["shape"][0], row["shape"][1])] = row[side]
    for row in (data["padding"] or {}).get("rows", []):
        for side in ("artifact", "eager"):
            if row[side] and "p50_ms" in row[side]:
                expected[("padding", side, row["batch"], row["length"])] = row[side]
    assert set(plotted) == set(expected)
    for key, stats in expected.items():
        for q in ("p50", "p90", "p99"):
            assert float(plotted[key][f"data-{q}"]) == stats[f"{q}_ms"], (key, q)
    return parsed


def test_both_sides_at_every_shape_with_a_report(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    model = {"class": "BertModel", "config": TINY_BERT, "seed": 0, "attn_implementation": "eager"}
    export_bundle(bundle, model, tensors=[random_ids([1, 14])], check_shapes=[[1, 7], [2, 14]])
    report = bundle / "bench.html"
    data = run_bench(dir=str(bundle), report=str(report), threads=1)

    assert data["threads"] == 1 and data["threads_default"] is False
    assert data["runs"] == 3 and data["warmup"] == 1
    assert data["eager"]["available"] is True and data["eager"]["reason"] is None
    assert data["eager"]["attn_implementation"] == "eager"
    assert data["eager"]["reference_max_abs_error"] == pytest.approx(0.0, abs=1e-5)
    assert [(r["shape"], r["case"], r["inputs"]) for r in data["shapes"]] == [
        ([1, 14], "traced", "sample"), ([1, 7], "check0", "sample"), ([2, 14], "check1", "sample"),
    ]
    for row in data["shapes"]:
        for side in ("artifact", "eager"):
            stats = row[side]
            assert all(key in stats for key in STAT_KEYS), stats
            assert stats["runs"] == 3
            assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
            assert "peak_rss_delta_bytes" in stats
    assert data["padding"] is None  # nothing padded
    assert data["report"] == str(report)
    parsed = check_report_matches(report, data)
    assert len(parsed.points) == 6
    assert sorted(os.listdir(bundle)) == [
        "bench.html", "model.pt", "record.json", "reference_outputs.safetensors", "sample_inputs.safetensors",
    ]  # no temporary file left behind


def test_lengths_make_drawn_inputs_with_the_traced_batch(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    model = {"class": "BertModel", "config": TINY_BERT}
    export_bundle(bundle, model, tensors=[random_ids([2, 10])])
    data = run_bench(dir=str(bundle), shapes=[[2, 8], [2, 10], [2, 24]])
    assert [(r["shape"], r["inputs"]) for r in data["shapes"]] == [
        ([2, 8], "drawn"), ([2, 10], "sample"), ([2, 24], "drawn"),
    ]
    assert data["threads_default"] is True and data["threads"] == torch.get_num_threads()
    assert data["report"] is None


def test_drawn_inputs_take_values_from_the_traced_ones() -> None:
    from tsexport_worker.bench.bench import draw_inputs

    traced = [torch.tensor([[5, 6, 7, 8]]), torch.tensor([[1, 1, 0, 0]]), torch.randn(1, 4, 3)]
    ids, mask, floats = draw_inputs(traced, [3, 9], 1)
    assert ids.shape == (3, 9) and set(ids.unique().tolist()) <= {5, 6, 7, 8}
    assert set(mask.unique().tolist()) <= {0, 1}
    assert floats.shape == (3, 9, 3)


def test_a_padded_trace_shows_what_padding_costs(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    config = {**TINY_BERT, "vocab_size": 64}
    model = {"class": "BertForMaskedLM", "config": config, "seed": 7}
    export_bundle(
        bundle, model, job_model={"seed": 7},
        inputs={"tokenizer": str(TOKENIZER), "text": GUIDE_TEXT, "pad_to": 16},
        tensors=[{"name": "input_ids", "from": "text"}, {"name": "attention_mask", "from": "text"}],
        check_shapes=[[1, 8]],
    )
    report = bundle / "bench.html"
    data = run_bench(dir=str(bundle), report=str(report))
    padding = data["padding"]
    assert padding["traced_length"] == 16 and padding["real_tokens"] == 14 and padding["masked"] is True
    assert [row["length"] for row in padding["rows"]] == [8, 14, 16]
    for row in padding["rows"]:
        assert row["batch"] == 1
        for side in ("artifact", "eager"):
            assert all(key in row[side] for key in STAT_KEYS), row
    check_report_matches(report, data)
    assert "What padding costs" in report.read_text(encoding="utf-8")


def test_padded_and_unpadded_inputs_hold_the_same_tokens(tmp_path: Path) -> None:
    from tsexport_worker.bench.bench import find_padding, load_bundle, padded_inputs, unpadded_inputs

    bundle_dir = tmp_path / "bundle"
    export_bundle(
        bundle_dir, {"class": "BertModel", "config": {**TINY_BERT, "vocab_size": 64}},
        inputs={"tokenizer": str(TOKENIZER), "text": GUIDE_TEXT, "pad_to": 16},
        tensors=[{"name": "input_ids", "from": "text"}, {"name": "attention_mask", "from": "text"},
                 {"name": "token_type_ids", "from": "zeros", "shape": [1, 16]}],
    )
    bundle = load_bundle(str(bundle_dir))
    padding = find_padding(bundle)
    assert padding is not None and len(padding.real_columns) == 14 and padding.traced_length == 16
    ids = bundle.traced[0]
    for length in (5, 14, 16):
        real = unpadded_inputs(bundle, padding, 1, length, 0)
        padded = padded_inputs(bundle, padding, real)
        assert [tuple(t.shape) for t in real] == [(1, length)] * 3
        assert [tuple(t.shape) for t in padded] == [(1, 16)] * 3
        assert real[1].eq(1).all()  # unpadded: the mask is all ones
        assert padded[1][0].tolist() == [1] * length + [0] * (16 - length)
        assert torch.equal(padded[0][:, :length], real[0])
        assert padded[0][0, length:].eq(ids[0, -1]).all()  # the pad id
        if length <= 14:
            assert torch.equal(real[0], ids[:, :length])


def save_tiny_pretrained(folder: Path) -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(3)
    BertModel(BertConfig(**TINY_BERT)).save_pretrained(str(folder))


def test_a_pretrained_eager_model_is_loaded_from_the_requests_path(tmp_path: Path) -> None:
    manifests = tmp_path / "manifests"
    save_tiny_pretrained(manifests / "models" / "tiny")
    bundle = tmp_path / "out" / "bundle"
    model = {"class": "BertModel", "pretrained": "./models/tiny", "attn_implementation": "eager"}
    export_bundle(
        bundle, model, job_model={"pretrained": str(manifests / "models" / "tiny"), "pretrained_is_local": True},
        manifest_file="manifests/tiny.yaml", files={"spec.model.pretrained/config.json": "x"},
        tensors=[random_ids([1, 9])], check_shapes=[[1, 5]],
    )
    # The request names the folder (the Swift side resolved it): both sides, and the rebuilt model is the exported one.
    data = run_bench(dir=str(bundle))
    assert data["eager"]["available"] is True, data["eager"]
    assert data["eager"]["pretrained"] == str(manifests / "models" / "tiny")
    assert data["eager"]["reference_max_abs_error"] == pytest.approx(0.0, abs=1e-5)

    # The folder moved after the request was made: the load fails here, said so, the artifact still measured.
    shutil.move(str(manifests / "models"), str(tmp_path / "elsewhere"))
    data = run_bench(dir=str(bundle))
    assert data["eager"]["available"] is False
    assert data["eager"]["reason"].startswith("the eager model could not be rebuilt: ")
    assert all(row["eager"] is None for row in data["shapes"])


def test_an_eager_model_the_request_says_is_missing_benches_the_artifact_alone(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    export_bundle(bundle, {"class": "BertModel", "config": TINY_BERT}, tensors=[random_ids([1, 9])],
                  check_shapes=[[1, 5]])
    reason = f"the pretrained folder {tmp_path / 'models' / 'tiny'} does not exist; it may have moved since the export"
    report = bundle / "bench.html"
    data = run_bench(dir=str(bundle), eager=None, eager_missing=reason, report=str(report))
    eager = data["eager"]
    assert eager == {"available": False, "reason": reason}
    for row in data["shapes"]:
        assert row["eager"] is None
        assert all(key in row["artifact"] for key in STAT_KEYS)
    parsed = check_report_matches(report, data)
    assert {p["data-series"] for p in parsed.points} == {"artifact"}
    text = report.read_text(encoding="utf-8")
    assert "eager model not measured" in text and "does not exist" in text


def test_bench_over_the_protocol(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    export_bundle(bundle, {"class": "BertModel", "config": TINY_BERT}, tensors=[random_ids([1, 6])])
    worker = Worker()
    try:
        full = bench_request(bundle, shapes=[[1, 6]], runs=2, warmup=0, threads=1, report=str(bundle / "bench.html"),
                             eager={"model": EAGER[str(bundle)]})
        progress, message = worker.request("bench", **full)
        assert message["type"] == "result", message
        assert [(p["stage"], p["status"]) for p in progress] == [
            ("load", "start"), ("load", "done"), ("bench", "start"), ("bench", "done"),
        ]
        row = message["data"]["shapes"][0]
        assert row["shape"] == [1, 6] and row["artifact"]["runs"] == 2 and row["eager"]["runs"] == 2
        check_report_matches(bundle / "bench.html", message["data"])

        _, bad = worker.request("bench", **{**full, "runs": 0})
        assert (bad["type"], bad["code"], bad["field"]) == ("error", "bad_request", "runs")
        _, relative = worker.request("bench", **{**full, "dir": "bundle"})
        assert (relative["code"], relative["field"]) == ("bad_request", "dir")
        _, missing = worker.request("bench", **{**full, "dir": str(tmp_path / "nothing")})
        assert (missing["code"], missing["stage"]) == ("load_failed", "bench")
        assert "model.pt" in missing["message"]
    finally:
        worker.close()


def test_percentiles_interpolate_between_ranks() -> None:
    from tsexport_worker.bench.bench_timing import percentile, summarize

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 90) == pytest.approx(90.1)
    assert percentile(values, 99) == pytest.approx(99.01)
    stats = summarize([3.0, 1.0, 2.0])
    assert (stats["p50_ms"], stats["min_ms"], stats["max_ms"], stats["runs"]) == (2.0, 1.0, 3.0, 3)
