"""guard: the scripted serving-envelope guard around a traced module (inside = unguarded, outside = refused)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import nativekit
import pytest
import torch
from tsexport_worker.export.guard import GuardDim, GuardInput, dim_message, guard_source, parameter_name, parameter_names, read_envelope, wrap
from tsexport_worker.verify.verify import compare

BERT_ENVELOPE = [
    GuardInput("input_ids", [[1, 4], [1, 16]], ["batch", "sequence"], dtype="int64"),
    GuardInput("attention_mask", [[1, 4], [1, 16]], ["batch", "sequence"]),
]


class _TupleBert(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=False))


def _ids(batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    # The same inputs as native/guard_check.cpp builds.
    ids = torch.arange(batch * seq, dtype=torch.long).remainder(50).reshape(batch, seq)
    return ids, torch.ones(batch, seq, dtype=torch.long)


@pytest.fixture(scope="module")
def traced_bert() -> torch.jit.ScriptModule:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37
    )
    wrapper = _TupleBert(BertModel(config).eval()).eval()
    with torch.no_grad():
        traced: torch.jit.ScriptModule = torch.jit.trace(wrapper, _ids(2, 8))
    return traced


@pytest.fixture(scope="module")
def guarded_bert(traced_bert: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    return wrap(traced_bert, BERT_ENVELOPE)


@pytest.fixture(scope="module")
def saved_bert(guarded_bert: torch.jit.ScriptModule, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("guard") / "model.pt"
    torch.jit.save(guarded_bert, str(path), _extra_files={"tsexport.json": '{"kind": "test"}'})
    return path


def _refusal(module: Any, *args: torch.Tensor) -> str:
    """The last line of the TorchScript error (the raised message), failing if the call is not refused."""
    with pytest.raises(torch.jit.Error) as caught:  # torch.jit.Error is an Exception, not a RuntimeError
        module(*args)
    last = str(caught.value).strip().splitlines()[-1]
    assert last.startswith("builtins.RuntimeError: ")
    return last.removeprefix("builtins.RuntimeError: ")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(map(_same, a, b))


# The product's float32 tolerance (ManifestDefaults.tolerance for float32: atol 1e-5, rtol 1e-4), judged by the
# worker's own comparison, for rewrites such as optimize_for_inference that may reorder floating-point operations.
FLOAT32_ATOL, FLOAT32_RTOL = 1e-5, 1e-4


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and compare(a, b, FLOAT32_ATOL, FLOAT32_RTOL)[2]
    return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(map(_close, a, b))


# ---------------------------------------------------------------------------------------------------------------
# Inside and outside


@pytest.mark.parametrize("shape", [(1, 1), (2, 8), (3, 12), (4, 16)])
def test_inside_the_envelope_equals_the_traced_module(
    traced_bert: torch.jit.ScriptModule, guarded_bert: torch.jit.ScriptModule, shape: tuple[int, int]
) -> None:
    args = _ids(*shape)
    with torch.no_grad():
        assert _same(guarded_bert(*args), traced_bert(*args))


@pytest.mark.parametrize(
    ("shape", "tensor", "message"),
    [
        ((2, 300), "input_ids", "tsexport envelope: input_ids dimension 1 (sequence) is 300, outside the verified range [1, 16]"),
        ((5, 8), "input_ids", "tsexport envelope: input_ids dimension 0 (batch) is 5, outside the verified range [1, 4]"),
        ((0, 8), "input_ids", "tsexport envelope: input_ids dimension 0 (batch) is 0, outside the verified range [1, 4]"),
        ((2, 17), "attention_mask", "tsexport envelope: attention_mask dimension 1 (sequence) is 17, outside the verified range [1, 16]"),
        ((9, 8), "attention_mask", "tsexport envelope: attention_mask dimension 0 (batch) is 9, outside the verified range [1, 4]"),
    ],
)
def test_outside_each_dimension_is_refused(
    guarded_bert: torch.jit.ScriptModule, shape: tuple[int, int], tensor: str, message: str
) -> None:
    ids, mask = _ids(2, 8)
    bad_ids, bad_mask = _ids(*shape)
    args = (bad_ids, mask) if tensor == "input_ids" else (ids, bad_mask)
    assert _refusal(guarded_bert, *args) == message
    spec = BERT_ENVELOPE[0 if tensor == "input_ids" else 1]
    index = 1 if shape[1] != 8 else 0
    assert dim_message(spec, index, shape[index]) == message  # the Python-side text is the same


def test_wrong_rank_and_dtype_are_refused(guarded_bert: torch.jit.ScriptModule) -> None:
    ids, mask = _ids(2, 8)
    assert _refusal(guarded_bert, ids[0], mask) == (
        "tsexport envelope: input_ids has rank 1, expected rank 2 (batch, sequence)"
    )
    assert _refusal(guarded_bert, ids, mask[None]) == (
        "tsexport envelope: attention_mask has rank 3, expected rank 2 (batch, sequence)"
    )
    assert _refusal(guarded_bert, ids.float(), mask) == (
        "tsexport envelope: input_ids must have dtype int64, the verified dtype"
    )


def test_forward_takes_the_tensor_names_and_keeps_the_return_type(
    traced_bert: torch.jit.ScriptModule, guarded_bert: torch.jit.ScriptModule
) -> None:
    schema = guarded_bert.forward.schema
    assert [a.name for a in schema.arguments] == ["self", "input_ids", "attention_mask"]
    assert str(schema.returns[0].type) == str(traced_bert.forward.schema.returns[0].type) == "Tuple[Tensor, Tensor]"
    ids, mask = _ids(1, 5)
    with torch.no_grad():
        assert _same(guarded_bert(attention_mask=mask, input_ids=ids), traced_bert(ids, mask))


def test_generated_source_is_named_in_tracebacks_and_never_written(
    guarded_bert: torch.jit.ScriptModule, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(torch.jit.Error) as caught:
        guarded_bert(*_ids(2, 300))
    assert 'File "tsexport_guard.py", line ' in str(caught.value)
    # A file of that name in the working folder neither is read nor written.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tsexport_guard.py").write_text("raise SystemExit('not this one')\n")
    traced = torch.jit.trace(torch.nn.Linear(2, 2).eval(), (torch.randn(1, 2),))
    guarded = wrap(traced, [GuardInput("x", [[1, 3], 2])])
    assert _refusal(guarded, torch.randn(4, 2)).startswith("tsexport envelope: x dimension 0 (dim 0) is 4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tsexport_guard.py"]
    assert "tsexport_guard" not in sys.modules


def test_envelope_is_readable(guarded_bert: torch.jit.ScriptModule) -> None:
    data = json.loads(guarded_bert.tsexport_envelope())
    assert data == read_envelope(guarded_bert)
    assert data["format"] == "tsexport.envelope/1"
    first = data["inputs"][0]
    assert first["name"] == first["argument"] == "input_ids" and first["rank"] == 2 and first["dtype"] == "int64"
    assert first["dims"][1] == {"index": 1, "role": "sequence", "min": 1, "max": 16}
    assert [GuardInput.from_json(entry) for entry in data["inputs"]] == BERT_ENVELOPE


# ---------------------------------------------------------------------------------------------------------------
# Save, load, freeze


def test_save_and_load_in_a_fresh_process(traced_bert: torch.jit.ScriptModule, saved_bert: Path) -> None:
    reference = saved_bert.parent / "reference.pt"
    with torch.no_grad():
        torch.save({"inside": traced_bert(*_ids(3, 12))}, str(reference))
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        extra = {{"tsexport.json": ""}}
        module = torch.jit.load({str(saved_bert)!r}, _extra_files=extra)
        ref = torch.load({str(reference)!r})["inside"]
        ids = torch.arange(36, dtype=torch.long).remainder(50).reshape(3, 12)
        with torch.no_grad():
            out = module(ids, torch.ones(3, 12, dtype=torch.long))
        result = {{
            "extra": extra["tsexport.json"].decode(),
            "exact": len(out) == len(ref) and all(torch.equal(a, b) for a, b in zip(out, ref)),
            "names": [a.name for a in module.forward.schema.arguments],
            "envelope": json.loads(module.tsexport_envelope())["format"],
        }}
        try:
            module(torch.zeros(2, 300, dtype=torch.long), torch.ones(2, 300, dtype=torch.long))
            result["refused"] = None
        except torch.jit.Error as error:
            result["refused"] = str(error).strip().splitlines()[-1]
        print(json.dumps(result))
        """
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "extra": '{"kind": "test"}',
        "exact": True,
        "names": ["self", "input_ids", "attention_mask"],
        "envelope": "tsexport.envelope/1",
        "refused": "builtins.RuntimeError: tsexport envelope: input_ids dimension 1 (sequence) is 300, "
        "outside the verified range [1, 16]",
    }


def test_freeze_and_optimize_for_inference_keep_the_checks(
    traced_bert: torch.jit.ScriptModule, guarded_bert: torch.jit.ScriptModule
) -> None:
    frozen = torch.jit.freeze(guarded_bert)
    kept = torch.jit.freeze(guarded_bert, preserved_attrs=["tsexport_envelope"])
    optimized = torch.jit.optimize_for_inference(guarded_bert)
    assert read_envelope(frozen) is None  # freezing inlines exported methods away unless preserved
    assert read_envelope(kept) == read_envelope(guarded_bert)
    args = _ids(3, 12)
    with torch.no_grad():
        reference = traced_bert(*args)
        assert _same(frozen(*args), reference)
        assert _same(kept(*args), reference)
        assert _close(optimized(*args), reference)
        for module in (frozen, kept, optimized):
            assert _refusal(module, *_ids(5, 8)).startswith("tsexport envelope: input_ids dimension 0 (batch) is 5")


@pytest.mark.parametrize("how", ["freeze", "optimize_for_inference"])
def test_optimized_module_is_guarded_saved_and_rewrapped_narrower(
    traced_bert: torch.jit.ScriptModule, how: str, tmp_path: Path
) -> None:
    # The export's order: optimize the traced module, then wrap it; the `guard` op rewraps the saved inner module.
    from tsexport_worker.export.trace import optimize

    guarded = wrap(optimize(traced_bert, how), BERT_ENVELOPE)
    path = tmp_path / "model.pt"
    torch.jit.save(guarded, str(path))
    loaded = torch.jit.load(str(path))
    assert read_envelope(loaded) == read_envelope(guarded)
    args = _ids(3, 12)
    with torch.no_grad():
        reference = traced_bert(*args)
        for module in (guarded, loaded):
            outputs = module(*args)
            assert len(outputs) == len(reference)
            for got, want in zip(outputs, reference, strict=True):
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
            assert _refusal(module, *_ids(5, 8)).startswith("tsexport envelope: input_ids dimension 0 (batch) is 5")
        narrower = [GuardInput(g.name, [[1, 2], [1, 16]], ["batch", "sequence"]) for g in BERT_ENVELOPE]
        rewrapped = wrap(loaded.inner, narrower)
        assert _refusal(rewrapped, *args) == "tsexport envelope: input_ids dimension 0 (batch) is 3, outside the verified range [1, 2]"
        for got, want in zip(rewrapped(*_ids(2, 12)), traced_bert(*_ids(2, 12)), strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Other inputs and outputs


class _Patches(torch.nn.Module):
    """A ViT-shaped stand-in: conv patches, nested tuple output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=8, stride=8)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        patches = self.conv(pixel_values).flatten(2)
        return patches, (patches.mean(-1), pixel_values.sum())


def test_float_input_with_fixed_dims_and_a_nested_tuple_output() -> None:
    torch.manual_seed(0)
    traced = torch.jit.trace(_Patches().eval(), (torch.randn(2, 3, 32, 32),))
    guarded = wrap(traced, [GuardInput("pixel-values", [[1, 4], 3, 32, 32], ["batch", "channels"], dtype="float32")])
    schema = guarded.forward.schema
    assert [a.name for a in schema.arguments] == ["self", "pixel_values"]
    assert str(schema.returns[0].type) == "Tuple[Tensor, Tuple[Tensor, Tensor]]"
    x = torch.randn(3, 3, 32, 32)
    assert _same(guarded(x), traced(x))
    prefix = "tsexport envelope: pixel-values"  # messages keep the tensor's own name
    assert _refusal(guarded, torch.randn(5, 3, 32, 32)) == f"{prefix} dimension 0 (batch) is 5, outside the verified range [1, 4]"
    assert _refusal(guarded, torch.randn(1, 1, 32, 32)) == f"{prefix} dimension 1 (channels) is 1, outside the verified range [3, 3]"
    assert _refusal(guarded, torch.randn(1, 3, 48, 32)) == f"{prefix} dimension 2 (dim 2) is 48, outside the verified range [32, 32]"
    assert _refusal(guarded, torch.randn(3, 32, 32)) == f"{prefix} has rank 3, expected rank 4 (batch, channels, dim 2, dim 3)"
    assert _refusal(guarded, x.double()) == f"{prefix} must have dtype float32, the verified dtype"


def test_a_single_tensor_output_stays_a_tensor() -> None:
    traced = torch.jit.trace(torch.nn.Linear(4, 2).eval(), (torch.randn(1, 4),))
    guarded = wrap(traced, [GuardInput("x", [[1, 8], 4])])
    assert str(guarded.forward.schema.returns[0].type) == "Tensor"
    x = torch.randn(8, 4)
    assert torch.equal(guarded(x), traced(x))


def test_names_are_sanitised_to_unique_identifiers() -> None:
    assert parameter_name("decoder_input_ids") == "decoder_input_ids"
    assert parameter_name("pixel-values") == "pixel_values"
    assert parameter_name("input.1") == "input_1"
    assert parameter_name("0image") == "_0image"
    assert parameter_name("class") == "class_"
    assert parameter_name("match") == "match_"  # a soft keyword
    assert parameter_name("self") == "self_" and parameter_name("torch") == "torch_" and parameter_name("str") == "str_"
    assert parameter_name("input") == "input"
    specs = [GuardInput(n, [[1, 2]]) for n in ("a-b", "a_b", "a.b")]
    assert parameter_names(specs) == ["a_b", "a_b_2", "a_b_3"]


def test_awkward_names_script_and_bind() -> None:
    class Three(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return a + b, c * 2

    args = (torch.ones(1, 3), torch.ones(1, 3), torch.ones(2))
    traced = torch.jit.trace(Three(), args)
    specs = [
        GuardInput("decoder_input_ids", [[1, 2], [1, 3]], ["batch", "decoder_sequence"]),
        GuardInput('in"put\\x', [[1, 2], 3]),
        GuardInput("self", [[1, 4]]),
    ]
    guarded = wrap(traced, specs)
    assert [a.name for a in guarded.forward.schema.arguments] == ["self", "decoder_input_ids", "in_put_x", "self_"]
    assert _same(guarded(*args), traced(*args))
    assert _refusal(guarded, torch.ones(1, 4), args[1], args[2]) == (
        "tsexport envelope: decoder_input_ids dimension 1 (decoder_sequence) is 4, outside the verified range [1, 3]"
    )
    assert _refusal(guarded, args[0], torch.ones(1, 2), args[2]) == (
        'tsexport envelope: in"put\\x dimension 1 (dim 1) is 2, outside the verified range [3, 3]'
    )
    assert json.loads(guarded.tsexport_envelope())["inputs"][1]["name"] == 'in"put\\x'


def test_bad_envelopes_are_refused_at_wrap_time(traced_bert: torch.jit.ScriptModule) -> None:
    with pytest.raises(ValueError, match="takes 2 inputs, the envelope names 1"):
        wrap(traced_bert, BERT_ENVELOPE[:1])
    with pytest.raises(ValueError, match="0 <= min <= max"):
        GuardDim(5, 2)
    with pytest.raises(TypeError):
        GuardInput("x", [[1, 2, 3]])
    with pytest.raises(ValueError, match="unknown dtype"):
        GuardInput("x", [1], dtype="int65")
    with pytest.raises(ValueError, match="2 roles for 1 dimensions"):
        GuardInput("x", [1], ["batch", "sequence"])
    assert "def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):" in guard_source(BERT_ENVELOPE)


# ---------------------------------------------------------------------------------------------------------------
# libtorch without Python


@pytest.mark.slow
def test_libtorch_loads_runs_and_refuses(traced_bert: torch.jit.ScriptModule, saved_bert: Path) -> None:
    binary = nativekit.libtorch_program("guard_check.cpp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    ran = subprocess.run([str(binary), str(saved_bert), "2", "8", "2", "300"], capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    lines = ran.stdout.splitlines()
    schema = next(line for line in lines if line.startswith("SCHEMA: "))
    assert "Tensor input_ids, Tensor attention_mask) -> ((Tensor, Tensor))" in schema
    envelope = json.loads(next(line for line in lines if line.startswith("ENVELOPE: ")).removeprefix("ENVELOPE: "))
    assert envelope["inputs"][1]["name"] == "attention_mask"
    inside = next(line for line in lines if line.startswith("INSIDE: "))
    with torch.no_grad():
        expected = traced_bert(*_ids(2, 8))[0].flatten()[0].item()
    assert inside.startswith("INSIDE: outputs 2 first ")
    assert float(inside.rsplit(" ", 1)[1]) == pytest.approx(expected, rel=1e-6, abs=1e-7)
    message = "tsexport envelope: input_ids dimension 1 (sequence) is 300, outside the verified range [1, 16]"
    # A TorchScript raise reaches C++ as torch::jit::JITException (a std::runtime_error), not as a c10::Error.
    assert "OUTSIDE: torch::jit::JITException python_class=builtins.RuntimeError" in lines
    assert f"builtins.RuntimeError: {message}" in lines
    assert f"ORIGINAL: {message}" in lines
