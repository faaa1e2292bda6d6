"""tsexport's Python worker: turns a resolved export job into a verified TorchScript bundle.

The Swift side decides; this package does what a job says and reports over a JSON-lines protocol
(docs/worker-protocol.md). Importing it imports nothing heavy: torch and transformers are loaded on demand.
"""

from __future__ import annotations

WORKER_VERSION = "2.0.0"
PROTOCOL_VERSION = 2

__all__ = ["PROTOCOL_VERSION", "WORKER_VERSION"]
