"""library: sentence-transformers: the exporting process writes encode()'s embeddings of real text (and the tokens),
and the fresh verifying process, which loads model.pt from disk and imports neither transformers nor
sentence-transformers, compares the artifact's sentence_embedding with them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from workerkit import make_job, minilm_dir, run_export, run_python

# verify_bundle in a fresh interpreter in which transformers and sentence_transformers cannot be imported.
VERIFY_WITHOUT_LIBRARIES = r"""
import json, sys
sys.modules["transformers"] = None
sys.modules["sentence_transformers"] = None
from tsexport_worker.verify.verify import verify_bundle
data = verify_bundle(sys.argv[1], 1e-5, 1e-4, encode_min_cosine=0.9999)
print(json.dumps({"encode_check": data["encode_check"], "passed": data["passed"],
                  "imported": sorted(m for m in ("transformers", "sentence_transformers") if sys.modules.get(m))}))
"""


def verify_fresh(bundle: Path) -> dict[str, Any]:
    proc = run_python(VERIFY_WITHOUT_LIBRARIES, str(bundle))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    staging = tmp_path_factory.mktemp("st-encode")
    model = minilm_dir()
    job = make_job(staging, model={"library": "sentence-transformers", "pretrained": model, "pretrained_is_local": True,
                                   "config": {}},
                   inputs={"tokenizer": model, "tokenizer_is_local": True, "add_special_tokens": True, "pad_to": 16,
                           "text": "Who was Jim Henson? Jim Henson was a puppeteer."},
                   tensors=[{"name": "input_ids", "from": "text"}, {"name": "attention_mask", "from": "text"}],
                   strict=True)
    job["trace"]["encode_check"] = {"min_cosine": 0.9999}
    data = run_export(job)
    assert "encode_check" not in data["library"], "the exporting process compares nothing"
    return staging


def test_the_verifying_process_compares_model_pt_with_encode(bundle: Path) -> None:
    with safe_open(str(bundle / "encode_reference.safetensors"), framework="pt") as handle:
        points = json.loads((handle.metadata() or {})["tsexport.encode_points"])
    assert [(p["case"], p["shape"]) for p in points] == [("traced", [1, 16])]
    assert points[0]["texts"] and "min_cosine" not in points[0]

    result = verify_fresh(bundle)
    assert result["imported"] == [] and result["passed"] is True
    check = result["encode_check"]
    assert (check["reference"], check["artifact"], check["compared_in"]) == ("SentenceTransformer.encode", "model.pt", "verify")
    assert check["min_cosine_allowed"] == 0.9999
    assert [p["case"] for p in check["points"]] == ["traced"]
    assert check["points"][0]["min_cosine"] >= 0.9999
    assert check["points"][0]["max_abs_error"] < 1e-5


def test_a_reference_that_differs_from_the_artifact_shows_in_the_cosine(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    copy.mkdir()
    for f in bundle.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    path = str(copy / "encode_reference.safetensors")
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(path)
    tensors["traced/sentence_embedding"] = -tensors["traced/sentence_embedding"]
    save_file(tensors, path, metadata=metadata)
    check = verify_fresh(copy)["encode_check"]
    assert check["points"][0]["min_cosine"] == pytest.approx(-1.0, abs=1e-4)


def test_verify_refuses_a_bundle_without_the_encode_references(bundle: Path, tmp_path: Path) -> None:
    from tsexport_worker.errors import WorkerError
    from tsexport_worker.verify.verify import verify_bundle

    copy = tmp_path / "bundle"
    copy.mkdir()
    for f in bundle.iterdir():
        if f.name != "encode_reference.safetensors":
            (copy / f.name).write_bytes(f.read_bytes())
    with pytest.raises(WorkerError) as caught:
        verify_bundle(str(copy), 1e-5, 1e-4, encode_min_cosine=0.9999)
    assert (caught.value.code, caught.value.stage) == ("verify_failed", "verify")
    assert "encode_reference.safetensors" in caught.value.message
    assert torch.is_tensor(load_file(str(bundle / "encode_reference.safetensors"))["traced/input_ids"])
