"""aoti: model.pt2 (AOTInductor) from the same wrapper as model.pt, exported over the serving envelope; Python and
libtorch (C++) runs match eager; out-of-envelope shapes and export failures."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nativekit
import pytest
import torch
from tsexport_worker.aoti import (
    dynamic_shapes_for,
    export_aoti,
    export_error,
    export_size,
    load_aoti,
    plan_dims,
    remake_example,
    run_aoti,
)
from tsexport_worker.envelope import Envelope
from tsexport_worker.errors import WorkerError
from tsexport_worker.trace import ForwardWrapper

PAIR = ["input_ids", "attention_mask"]
TRACED = {"batch": 1, "sequence": 8}


def _envelope(names: list[str], batch: tuple[int, int] = (1, 4), sequence: tuple[int, int | None] = (1, 32)) -> Envelope:
    axes: list[tuple[str, int, int | None]] = [("batch", *batch), ("sequence", *sequence)]
    return Envelope(axes, {n: ["batch", "sequence"] for n in names}, [], True)


def _inputs(names: list[str], batch: int, seq: int, pad: bool = False) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(batch * 1000 + seq)
    out = [torch.randint(0, 99, (batch, seq), generator=generator)]
    if "attention_mask" in names:
        mask = torch.ones(batch, seq, dtype=torch.long)
        if pad:
            for row in range(batch):
                mask[row, int(torch.randint(1, seq + 1, (1,), generator=generator)) :] = 0
        out.append(mask)
    return out


def _bert() -> ForwardWrapper:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        attn_implementation="eager",
    )  # fmt: skip
    return ForwardWrapper(BertModel(config).eval(), PAIR, True).eval()


def _max_error(expected: Any, got: list[torch.Tensor]) -> float:
    assert len(expected) == len(got)
    return max(float((e - g).abs().max()) for e, g in zip(expected, got, strict=True))


# ---------------------------------------------------------------------------------------------------------------
# planning (no compile)


def test_plan_shares_one_dim_per_axis_and_exports_size_one_at_two() -> None:
    envelope = _envelope(PAIR)
    example = _inputs(PAIR, 1, 8)
    dynamic, sizes, names = plan_dims(example, PAIR, envelope, TRACED)
    assert dynamic == {"batch": (1, 4), "sequence": (1, 32)}
    assert sizes == {"batch": 2, "sequence": 8}  # traced batch 1 is exported at 2 (0/1 specialisation)
    remade = remake_example(example, PAIR, envelope, sizes)
    assert [tuple(t.shape) for t in remade] == [(2, 8), (2, 8)]
    assert torch.equal(remade[0][1], example[0][0]) and torch.equal(remade[1], torch.ones(2, 8, dtype=torch.long))
    ((ids, mask),) = dynamic_shapes_for(remade, PAIR, envelope, dynamic, names)
    assert ids is not None and mask is not None
    assert ids[0] is mask[0] and ids[1] is mask[1]  # the same Dim object for every dimension of one axis
    assert (ids[0].min, ids[0].max, ids[1].min, ids[1].max) == (1, 4, 1, 32)


def test_plan_static_axes_and_sizes() -> None:
    # A single-size axis, or one within [0, 1], stays static; a null max means the traced size.
    envelope = _envelope(PAIR, batch=(1, 1), sequence=(4, None))
    dynamic, sizes, _ = plan_dims(_inputs(PAIR, 1, 8), PAIR, envelope, TRACED)
    assert dynamic == {"sequence": (4, 8)} and sizes == {"sequence": 8}
    assert export_size(1, 1, 4) == 2 and export_size(0, 0, 8) == 2 and export_size(3, 1, 4) == 3
    assert export_size(1, 3, 9) == 3 and export_size(9, 1, 4) == 2
    assert plan_dims(_inputs(PAIR, 1, 8), PAIR, None, TRACED) == ({}, {}, {})


# ---------------------------------------------------------------------------------------------------------------
# export failures (no compile: they fail in torch.export)


@pytest.fixture(scope="module")
def bert() -> ForwardWrapper:
    return _bert()


def test_size_one_example_is_specialised_and_reported(bert: ForwardWrapper) -> None:
    # Why export_aoti remakes the example: a size-1 example under Dim(min=1) is refused by torch.export.
    envelope = _envelope(PAIR)
    dynamic, _, names = plan_dims(_inputs(PAIR, 1, 8), PAIR, envelope, TRACED)
    example = _inputs(PAIR, 1, 8)
    with pytest.raises(Exception, match=r"Constraints violated \(batch\)") as caught, torch.no_grad():
        torch.export.export(bert, tuple(example), dynamic_shapes=dynamic_shapes_for(example, PAIR, envelope, dynamic, names))
    error = export_error(caught.value, PAIR, envelope, dynamic, names)
    assert (error.stage, error.code, error.field) == ("export_aoti", "export_failed", "spec.trace.envelope.batch")
    assert "`batch` axis dynamic over [1, 4]" in error.message and "specialized it to be a constant (1)" in error.message
    assert "Traceback" not in error.message and "\n" not in error.message


def test_envelope_beyond_position_embeddings_names_the_axis(bert: ForwardWrapper, tmp_path: Path) -> None:
    with pytest.raises(WorkerError) as caught:
        export_aoti(bert, _inputs(PAIR, 1, 8), PAIR, _envelope(PAIR, sequence=(1, 600)), TRACED, str(tmp_path / "m.pt2"))
    error = caught.value
    assert (error.stage, error.code, error.field) == ("export_aoti", "export_failed", "spec.trace.envelope.sequence")
    assert error.message.startswith("torch.export cannot keep the `sequence` axis dynamic over [1, 600] (UserError: ")
    assert "input_ids dimension 1 <= 512" in error.message and "\n" not in error.message
    assert error.detail and not (tmp_path / "m.pt2").exists()


class _DataDependent(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        if x.sum() > 0:
            return (x * 2,)
        return (x - 1,)


def test_data_dependent_control_flow_is_export_failed(tmp_path: Path) -> None:
    envelope = Envelope([("batch", 1, 4)], {"x": ["batch", None]}, [], False)
    with pytest.raises(WorkerError) as caught:
        export_aoti(_DataDependent(), [torch.ones(1, 3)], ["x"], envelope, {"batch": 1}, str(tmp_path / "m.pt2"))
    error = caught.value
    assert (error.code, error.field) == ("export_failed", "spec.output.formats")
    assert "data-dependent" in error.message and "\n" not in error.message


# ---------------------------------------------------------------------------------------------------------------
# compiled packages (two compiles in this file: BERT with a mask, GPT-2 without)


@pytest.fixture(scope="module")
def bert_package(bert: ForwardWrapper, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    path = str(tmp_path_factory.mktemp("aoti") / "model.pt2")
    progress: list[tuple[str, str]] = []
    facts = export_aoti(bert, _inputs(PAIR, 1, 8), PAIR, _envelope(PAIR), TRACED, path, lambda s, st, _: progress.append((s, st)))
    assert progress == [("export_aoti", "start"), ("export_aoti", "done")]
    yield path, facts


@pytest.mark.slow
def test_bert_package_matches_eager_at_corners_and_inside(bert: ForwardWrapper, bert_package: tuple[str, dict[str, Any]]) -> None:
    path, facts = bert_package
    assert facts["dynamic_dims"] == {"batch": [1, 4], "sequence": [1, 32]}
    assert facts["export_sizes"] == {"batch": 2, "sequence": 8}
    assert sorted(facts["range_constraints"]) == [[1, 4], [1, 32]]
    assert facts["inductor_configs"]["aot_inductor.check_lowerbound"] is False
    assert facts["bytes"] == os.path.getsize(path) > 100_000
    assert facts["export_seconds"] > 0 and facts["compile_seconds"] > 0
    model = load_aoti(path)
    for batch, seq in [(1, 1), (1, 32), (4, 1), (4, 32), (2, 7), (3, 19)]:
        for pad in (False, True):
            inputs = _inputs(PAIR, batch, seq, pad)
            with torch.no_grad():
                expected = bert(*inputs)
            got = run_aoti(path, inputs, model)
            assert [tuple(t.shape) for t in got] == [(batch, seq, 32), (batch, 32)]
            assert _max_error(expected, got) < 1e-5, (batch, seq, pad)


_OUTSIDE = """
import torch
from tsexport_worker.aoti import run_aoti
for batch, seq in [(1, 1), (5, 8), (2, 33)]:
    x = [torch.zeros(batch, seq, dtype=torch.long), torch.ones(batch, seq, dtype=torch.long)]
    try:
        print("RAN", batch, seq, [tuple(t.shape) for t in run_aoti({path!r}, x)], flush=True)
    except RuntimeError as exc:
        print("REFUSED", batch, seq, str(exc).strip(), flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("check", ["0", "1"])
def test_bert_package_outside_envelope(bert_package: tuple[str, dict[str, Any]], check: str) -> None:
    # The package checks its inputs only when AOTI_RUNTIME_CHECK_INPUTS=1; batch 1 passes the check because the
    # package is compiled with aot_inductor.check_lowerbound=False (inductor's own lower bound is 2).
    code = _OUTSIDE.format(path=bert_package[0])
    env = {**os.environ, "AOTI_RUNTIME_CHECK_INPUTS": check}
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    lines = [line for line in ran.stdout.splitlines() if line.startswith(("RAN", "REFUSED"))]
    assert lines[0] == "RAN 1 1 [(1, 1, 32), (1, 32)]"
    if check == "0":
        assert lines[1:] == ["RAN 5 8 [(5, 8, 32), (5, 32)]", "RAN 2 33 [(2, 33, 32), (2, 32)]"]
    else:
        assert lines[1:] == [
            "REFUSED 5 8 input_handles[0]: dim value is too large at 0, expected to be <= 4, but got: 5",
            "REFUSED 2 33 input_handles[0]: dim value is too large at 1, expected to be <= 32, but got: 33",
        ]


@pytest.mark.slow
def test_gpt2_exports_with_dynamic_batch_without_a_mask(tmp_path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False, attn_implementation="eager")
    wrapper = ForwardWrapper(GPT2LMHeadModel(config).eval(), ["input_ids"], True).eval()
    path = str(tmp_path / "gpt2.pt2")
    facts = export_aoti(wrapper, _inputs(["input_ids"], 1, 8), ["input_ids"], _envelope(["input_ids"]), TRACED, path)
    assert facts["dynamic_dims"] == {"batch": [1, 4], "sequence": [1, 32]}
    model = load_aoti(path)
    for batch, seq in [(1, 1), (4, 32), (3, 5)]:
        inputs = _inputs(["input_ids"], batch, seq)
        with torch.no_grad():
            expected = wrapper(*inputs)
        got = run_aoti(path, inputs, model)
        assert [tuple(t.shape) for t in got] == [(batch, seq, 99)]
        assert _max_error(expected, got) < 1e-5, (batch, seq)


# ---------------------------------------------------------------------------------------------------------------
# libtorch without Python


@pytest.fixture(scope="module")
def aoti_check() -> Path:
    return nativekit.libtorch_program("aoti_check.cpp")


def _spec(tensor: torch.Tensor) -> str:
    shape = "x".join(str(s) for s in tensor.shape)
    return f"int64:{shape}:" + ",".join(str(int(v)) for v in tensor.flatten())


def _parse_outputs(stdout: str) -> list[torch.Tensor]:
    lines = stdout.splitlines()
    assert lines[-1] == "DONE", stdout[-2000:]
    out: list[torch.Tensor] = []
    for header, values in zip(lines[1:-1:2], lines[2:-1:2], strict=True):
        _, _, dtype, shape = header.split(" ")
        assert dtype == "float32" and values.startswith("VALUES ")
        data = torch.tensor([float(v) for v in values.split(" ")[1:]], dtype=torch.float64)
        out.append(data.reshape([int(s) for s in shape.split("x")]))
    return out


@pytest.mark.slow
def test_libtorch_runs_the_package_like_python(
    aoti_check: Path, bert_package: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    path = bert_package[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    for batch, seq, from_file in [(2, 5, False), (1, 1, True), (3, 12, True)]:
        inputs = _inputs(PAIR, batch, seq, pad=True)
        specs = [_spec(t) for t in inputs]
        if from_file:
            listing = tmp_path / f"inputs_{batch}_{seq}.txt"
            listing.write_text("# input_ids, attention_mask\n" + "\n".join(specs) + "\n")
            args = [f"@{listing}"]
        else:
            args = specs
        ran = subprocess.run([str(aoti_check), path, *args], capture_output=True, text=True, env=env, timeout=300)
        assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
        assert ran.stdout.startswith("INPUTS 2\n")
        native = _parse_outputs(ran.stdout)
        python = run_aoti(path, inputs)
        assert [tuple(t.shape) for t in native] == [(batch, seq, 32), (batch, 32)]
        assert _max_error([t.double() for t in python], native) < 1e-5, (batch, seq)
    bad = subprocess.run([str(aoti_check), path, "int64:2x2:1,2,3"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and bad.stdout.startswith("ERROR: shape wants 4 values, got 3")
