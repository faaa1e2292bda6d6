"""A Python runtime without torch (or with a broken transformers): hello says so, every export is refused cleanly."""

from __future__ import annotations

import sys
from pathlib import Path

from workerkit import Worker, make_job


def _fake_package(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(f"raise ImportError('{name} is deliberately broken in this test')\n")
    return folder


def test_hello_lists_missing_torch_and_export_answers_missing_dependency(tmp_path: Path) -> None:
    fake = _fake_package(tmp_path / "fake", "torch")
    # -S: no site-packages, so transformers and safetensors are absent too; torch.py raises ImportError.
    worker = Worker(python=[sys.executable, "-S"], pythonpath=[str(fake)])
    hello = worker.hello
    assert hello["type"] == "hello"
    assert hello["torch"] is None
    assert hello["transformers"] is None
    assert hello["missing"] == ["torch", "transformers", "safetensors"]
    assert all(not target["available"] for target in hello["targets"].values())
    _, export = worker.request("export", job=make_job(tmp_path / "out"))
    _, again = worker.request("export", job=make_job(tmp_path / "out"))
    _, verify = worker.request("verify_bundle", dir=str(tmp_path),
                               tolerance={"atol": 1e-5, "rtol": 1e-4, "min_cosine": None}, encode_check=None)
    _, probe = worker.request("probe")
    _, shutdown = worker.request("shutdown")
    assert worker.close() == 0
    for answer in (export, again, verify):
        assert answer["type"] == "error"
        assert answer["code"] == "missing_dependency"
        assert "torch" in answer["message"]
    assert "deliberately broken" in export["message"]
    assert (export["stage"], verify["stage"]) == ("load", "verify")
    assert probe["data"]["missing"] == ["torch", "transformers", "safetensors"]
    assert shutdown["ok"] is True
    assert not (tmp_path / "out").exists()


def test_broken_transformers_is_reported_on_the_first_export(tmp_path: Path) -> None:
    fake = _fake_package(tmp_path / "fake", "transformers")
    worker = Worker(pythonpath=[str(fake)])
    assert worker.hello["torch"] is not None
    _, export = worker.request("export", job=make_job(tmp_path / "out"))
    assert worker.close() == 0
    assert export["code"] == "missing_dependency"
    assert "transformers" in export["message"]
    assert export["stage"] == "load"
