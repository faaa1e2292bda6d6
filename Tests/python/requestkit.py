"""The requests the Swift planner sends, as `scripts/request-fixtures` saved them from `tsexport plan --json` on the
manifests in fixtures/manifests: the worker tests load them instead of building requests by hand."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REQUESTS = FIXTURES / "requests"
REPO = Path(__file__).resolve().parents[2]


def names() -> list[str]:
    """Every fixture's manifest name."""
    return sorted(p.stem for p in REQUESTS.glob("*.json"))


def _fill(value: Any, root: Path) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, root) for v in value]
    if value == "@FINGERPRINT@":
        return "sha256:request-fixture"
    if value == "@VERSIONS@":
        return {}
    if isinstance(value, str):
        for placeholder, path in (("@ROOT@", root), ("@REPO@", REPO)):
            if value == placeholder or value.startswith(placeholder + "/"):
                return str(path) + value[len(placeholder):]
    return value


def requests(name: str, root: Path | str) -> dict[str, Any]:
    """The plan's requests of manifest `name` (`export`, `verify_bundle`, `guard`, `deploy`: a list) as if planned
    under the output root `root`; the export's extra_record has a stand-in fingerprint and no versions (the executor
    fills in the running worker's)."""
    raw = json.loads((REQUESTS / f"{name}.json").read_text(encoding="utf-8"))
    filled: dict[str, Any] = _fill(raw, Path(root))
    return filled


def export_job(name: str, root: Path | str) -> dict[str, Any]:
    """The plan's export job of manifest `name` under the output root `root`."""
    return copy.deepcopy(requests(name, root)["export"]["job"])


def body(request: dict[str, Any]) -> dict[str, Any]:
    """A request without `op`, as the worker's op handlers receive its fields."""
    return {k: v for k, v in request.items() if k != "op"}
