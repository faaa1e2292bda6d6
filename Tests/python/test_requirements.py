"""The managed runtime's pins are the versions this worker is tested with."""

from __future__ import annotations

import importlib.metadata

from packaging.version import Version
from workerkit import WORKER_DIR


def test_requirements_pin_the_tested_versions() -> None:
    lines = (WORKER_DIR / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    assert {"torch", "transformers", "safetensors"} <= set(pins)
    assert pins["torch"] == "2.13.0" and pins["transformers"] == "5.24.0" and pins["safetensors"] == "0.8.0"
    for package, version in pins.items():
        installed = Version(importlib.metadata.version(package))
        assert installed.public == Version(version).public, f"{package}: installed {installed}, pinned {version}"


def test_worker_version_constant() -> None:
    import tsexport_worker

    assert tsexport_worker.WORKER_VERSION == "2.0.0"
    assert tsexport_worker.PROTOCOL_VERSION == 2
