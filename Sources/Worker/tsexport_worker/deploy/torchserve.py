"""Deploy kind `torchserve`: a .mar made by the real torch-model-archiver with tsexport's handler."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Any

from .. import WORKER_VERSION
from ..bundle import RECORD_FILE, sha256_file
from ..errors import WorkerError, describe
from .common import FAILED, STAGE, Bundle, DeployRequest, check_sha, failed

SIGNATURE_FILE = "tsexport_signature.json"
HANDLER_FILE = "torchserve_handler.py"
ARCHIVER_MODULE = "model_archiver.model_packaging"
MANIFEST_ENTRY = "MAR-INF/MANIFEST.json"
# What the archive states as its creation time and its entries' times: fixed, so the same bundle gives the same bytes.
FIXED_CREATED_ON = "01/01/1980 00:00:00"
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def make_reproducible(mar: str) -> dict[str, Any]:
    """Rewrites the archive so its bytes depend only on its files: entries in name order, fixed times and modes, and
    MANIFEST.json's createdOn fixed. Returns the manifest as the archiver wrote it (its real creation time)."""
    with zipfile.ZipFile(mar) as archive:
        original: dict[str, Any] = json.loads(archive.read(MANIFEST_ENTRY).decode("utf-8"))
        entries = sorted(
            ((info.filename, archive.read(info)) for info in archive.infolist() if not info.is_dir()),
            key=lambda e: e[0],
        )
    fixed = dict(original)
    if "createdOn" in fixed:
        fixed["createdOn"] = FIXED_CREATED_ON
    temporary = mar + ".tmp"
    with zipfile.ZipFile(temporary, "w") as out:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            if name == MANIFEST_ENTRY:
                data = json.dumps(fixed, indent=4).encode("utf-8")
            out.writestr(info, data, compresslevel=6)
    os.replace(temporary, mar)
    return original


def handler_path() -> str:
    """The handler beside this module (tsexport_worker/deploy/torchserve_handler.py)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), HANDLER_FILE)


def archiver_version() -> str | None:
    try:
        import importlib.metadata

        return importlib.metadata.version("torch-model-archiver")
    except Exception:  # noqa: BLE001 - no readable distribution metadata: the version is unknown
        return None


def deploy_torchserve(bundle: Bundle, request: DeployRequest) -> dict[str, Any]:
    try:
        found = importlib.util.find_spec("model_archiver") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise WorkerError(
            STAGE, "missing_dependency",
            "deploy kind torchserve needs torch-model-archiver in the Python runtime (pip install "
            "torch-model-archiver), or let tsexport use its managed runtime, which has it",
        )
    sha = sha256_file(bundle.model_path)
    check_sha(bundle, sha)
    signature = {
        "name": request.name,
        "input_signature": bundle.inputs,
        "output_signature": bundle.outputs,
        "hardware": bundle.hardware,
        "device": bundle.device,
        "model_sha256": sha,
        "worker_version": WORKER_VERSION,
    }
    mar = os.path.join(request.dest, f"{request.name}.mar")
    try:
        os.makedirs(request.dest, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".tsexport-mar-", dir=request.dest) as scratch:
            # Extra files are passed comma-separated: copies under names without commas, whatever the bundle's path.
            extra = [os.path.join(scratch, SIGNATURE_FILE)]
            with open(extra[0], "w", encoding="utf-8") as handle:
                json.dump(signature, handle, indent=2, sort_keys=True)
            record_path = os.path.join(bundle.dir, RECORD_FILE)
            if os.path.isfile(record_path):
                extra.append(os.path.join(scratch, RECORD_FILE))
                shutil.copyfile(record_path, extra[-1])
            argv = [
                sys.executable, "-m", ARCHIVER_MODULE,
                "--model-name", request.name,
                "--version", request.version,
                "--serialized-file", bundle.model_path,
                "--handler", handler_path(),
                "--extra-files", ",".join(extra),
                "--export-path", request.dest,
                "--archive-format", "default",
                "--force",
            ]
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=scratch, check=False
            )
    except OSError as exc:
        raise failed(f"the TorchServe archive cannot be written in {request.dest}: {describe(exc)}", exc) from exc
    if done.returncode != 0 or not os.path.isfile(mar):
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-12:])
        last = tail.splitlines()[-1] if tail else f"exit status {done.returncode}"
        raise WorkerError(
            STAGE, FAILED, f"torch-model-archiver failed: {last}", detail=f"argv: {argv}\n{tail}"
        )
    try:
        manifest = make_reproducible(mar)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise failed(f"torch-model-archiver wrote an unreadable archive: {describe(exc)}", exc) from exc
    return {
        "kind": "torchserve",
        "files": [os.path.basename(mar)],
        "mar": os.path.basename(mar),
        "model_sha256": sha,
        "manifest": manifest,
        "handler": HANDLER_FILE,
        "archiver_version": archiver_version(),
        "warnings": [],
    }
