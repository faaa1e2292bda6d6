"""bundle.py: the one record reader (record.json laid over the record embedded in model.pt) and the one sha256."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch


class _Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _bundle(directory: Path, embedded: dict, on_disk: dict | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    module = torch.jit.trace(_Identity(), (torch.zeros(1, 2),))
    torch.jit.save(module, str(directory / "model.pt"),
                   _extra_files={"tsexport/record.json": json.dumps(embedded).encode()})
    if on_disk is not None:
        (directory / "record.json").write_text(json.dumps(on_disk))
    return directory


def test_record_json_is_laid_over_the_embedded_record(tmp_path: Path) -> None:
    from tsexport_worker.bundle import read_record, recorded_device

    bundle = _bundle(tmp_path / "b", {"a": 1, "b": 1, "target": {"device": "cuda"}}, {"b": 2, "c": 3})
    assert read_record(str(bundle), "verify", "verify_failed") == {"a": 1, "b": 2, "c": 3, "target": {"device": "cuda"}}
    assert recorded_device(read_record(str(bundle), "verify", "verify_failed")) == "cuda"
    alone = _bundle(tmp_path / "c", {"a": 1}, None)
    assert read_record(str(alone), "bench", "load_failed") == {"a": 1}
    assert recorded_device({}) == "cpu"


def test_an_unreadable_record_is_the_callers_error(tmp_path: Path) -> None:
    from tsexport_worker.bundle import read_record
    from tsexport_worker.errors import WorkerError

    bundle = _bundle(tmp_path / "b", {"a": 1}, None)
    (bundle / "record.json").write_text("{not json")
    with pytest.raises(WorkerError) as caught:
        read_record(str(bundle), "deploy", "serialize_failed")
    assert (caught.value.stage, caught.value.code) == ("deploy", "serialize_failed")
    (bundle / "model.pt").write_bytes(b"not a zip")
    with pytest.raises(WorkerError) as caught:
        read_record(str(bundle), "bench", "load_failed")
    assert (caught.value.stage, caught.value.code) == ("bench", "load_failed")
    assert "not a TorchScript archive" in caught.value.message


def test_one_sha256_for_hashing_and_copying(tmp_path: Path) -> None:
    from tsexport_worker.bundle import copy_hashed, sha256_file

    source = tmp_path / "a.bin"
    source.write_bytes(bytes(range(256)) * 9000)  # more than one chunk
    want = hashlib.sha256(source.read_bytes()).hexdigest()
    assert sha256_file(str(source)) == want
    assert copy_hashed(str(source), str(tmp_path / "b.bin")) == want
    assert (tmp_path / "b.bin").read_bytes() == source.read_bytes()


def test_canonical_safetensors_gives_the_same_bytes_whatever_the_metadata_order(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from tsexport_worker.bundle import canonical_safetensors

    tensors = {"b/x": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a/y": torch.ones(3, dtype=torch.int64)}
    written = []
    for i, metadata in enumerate(({"tsexport.cases": "[1]", "tsexport.inputs": "[\"x\"]", "z": "é"},
                                  {"z": "é", "tsexport.inputs": "[\"x\"]", "tsexport.cases": "[1]"})):
        path = tmp_path / f"{i}.safetensors"
        save_file(tensors, str(path), metadata=metadata)
        canonical_safetensors(str(path))
        written.append(path.read_bytes())
    assert written[0] == written[1]
    header_length = int.from_bytes(written[0][:8], "little")
    assert header_length % 8 == 0
    header = json.loads(written[0][8:8 + header_length])
    assert list(header) == ["__metadata__", "a/y", "b/x"] and list(header["__metadata__"])[0] == "tsexport.cases"
    loaded = load_file(str(tmp_path / "0.safetensors"))
    assert torch.equal(loaded["b/x"], tensors["b/x"]) and torch.equal(loaded["a/y"], tensors["a/y"])


def test_cpu_features_name_the_machine_and_torch_capability() -> None:
    import platform

    from tsexport_worker.bundle import cpu_features

    cpu = cpu_features()
    assert cpu["machine"] == platform.machine()
    assert cpu["torch_capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["features"] == sorted(cpu["features"])
