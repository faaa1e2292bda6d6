"""The torch dtype of each model dtype a job may name (the names are protocol.MODEL_DTYPES)."""

from __future__ import annotations

import torch

MODEL_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
