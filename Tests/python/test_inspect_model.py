"""The `inspect` op (`tsexport init`'s questions): config-only facts about a local pretrained folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from workerkit import TINY_BERT, TINY_GPT2, Worker, minilm_dir

REPO = Path(__file__).resolve().parents[2]
TINY_TOKENIZER = REPO / "specs" / "tokenizers" / "tiny-bert"


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny pretrained folders as save_pretrained writes them, and a few odd ones."""
    import torch
    import transformers as t

    root = tmp_path_factory.mktemp("inspect")
    torch.manual_seed(0)
    made = {
        "bert": t.BertForSequenceClassification(t.BertConfig(**TINY_BERT)),
        "gpt2": t.GPT2LMHeadModel(t.GPT2Config(**TINY_GPT2)),
        "bart": t.BartForConditionalGeneration(t.BartConfig(
            vocab_size=100, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64)),
        "vit": t.ViTModel(t.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=4, intermediate_size=37)),
    }
    out: dict[str, Path] = {}
    for name, model in made.items():
        model.save_pretrained(root / name)
        out[name] = root / name
    for f in TINY_TOKENIZER.iterdir():  # the BERT folder gets the tiny WordPiece tokenizer (64 tokens < vocab 100)
        shutil.copy(f, out["bert"] / f.name)
    # Only a config (no weights) and pickle-only weights: inspect reads neither.
    (root / "config-only").mkdir()
    shutil.copy(out["bert"] / "config.json", root / "config-only" / "config.json")
    out["config-only"] = root / "config-only"
    (root / "pickle").mkdir()
    shutil.copy(out["gpt2"] / "config.json", root / "pickle" / "config.json")
    (root / "pickle" / "pytorch_model.bin").write_bytes(b"not a pickle: inspect must never open it")
    out["pickle"] = root / "pickle"
    # A config without architectures.
    (root / "bare").mkdir()
    config = json.loads((out["bert"] / "config.json").read_text())
    config.pop("architectures", None)
    (root / "bare" / "config.json").write_text(json.dumps(config))
    out["bare"] = root / "bare"
    return out


@pytest.fixture(scope="module")
def worker() -> Any:
    w = Worker()
    yield w
    w.close()


def inspect(worker: Worker, source: Path | str, cls: str | None = None, task: str | None = None) -> dict[str, Any]:
    return worker.request("inspect", source=str(source), **{"class": cls, "task": task})[1]


def test_minilm_facts(worker: Worker) -> None:
    answer = inspect(worker, minilm_dir())
    assert answer["type"] == "result", answer
    data = answer["data"]
    assert data["class"] == "BertModel" and data["resolved_class"] == "BertModel"
    assert data["class_origin"] == "architectures" and data["is_auto"] is False
    assert data["model_type"] == "bert"
    assert data["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert data["max_position_embeddings"] == 512 and data["vocab_size"] == 30522 and data["type_vocab_size"] == 2
    tok = data["tokenizer"]
    assert tok["present"] is True and tok["pad_token"] is True and tok["mask_token"] is True
    assert tok["sample_tokens"] == 14  # [CLS] who was jim henson ? jim henson was a puppet ##eer . [SEP]
    assert data["weights"] == {"safetensors": True, "pickle": []}


def test_families(worker: Worker, folders: dict[str, Path]) -> None:
    gpt2 = inspect(worker, folders["gpt2"])["data"]
    assert gpt2["resolved_class"] == "GPT2LMHeadModel"
    assert gpt2["inputs"][:2] == ["input_ids", "attention_mask"]
    assert gpt2["max_position_embeddings"] == 64  # n_positions
    assert gpt2["type_vocab_size"] is None
    assert gpt2["tokenizer"]["present"] is False, "a bare folder has no tokenizer (transformers 5 would make an empty one)"

    bart = inspect(worker, folders["bart"])["data"]
    assert bart["is_encoder_decoder"] is True
    assert {"input_ids", "attention_mask", "decoder_input_ids"} <= set(bart["inputs"])

    vit = inspect(worker, folders["vit"])["data"]
    assert vit["inputs"][0] == "pixel_values" and "input_ids" not in vit["inputs"]
    assert (vit["image_size"], vit["num_channels"]) == (32, 3)

    bert = inspect(worker, folders["bert"])["data"]
    assert bert["tokenizer"]["present"] is True and bert["tokenizer"]["pad_token"] is True


def test_task_and_class_resolve_auto_classes(worker: Worker, folders: dict[str, Path]) -> None:
    data = inspect(worker, folders["bert"], "AutoModelForTokenClassification", "token-classification")["data"]
    assert data["class"] == "AutoModelForTokenClassification" and data["is_auto"] is True
    assert data["resolved_class"] == "BertForTokenClassification" and data["class_origin"] == "task"
    given = inspect(worker, folders["bert"], "BertForMaskedLM")["data"]
    assert (given["class_origin"], given["resolved_class"]) == ("class", "BertForMaskedLM")
    bare = inspect(worker, folders["bare"])["data"]
    assert (bare["class"], bare["class_origin"], bare["resolved_class"]) == ("AutoModel", "default", "BertModel")


def test_config_only_and_pickle_folders_are_read_without_weights(worker: Worker, folders: dict[str, Path]) -> None:
    data = inspect(worker, folders["config-only"])["data"]
    assert data["weights"] == {"safetensors": False, "pickle": []}
    assert data["resolved_class"] == "BertForSequenceClassification"
    pickle = inspect(worker, folders["pickle"])["data"]
    assert pickle["weights"] == {"safetensors": False, "pickle": ["pytorch_model.bin"]}


def test_refusals(worker: Worker, folders: dict[str, Path]) -> None:
    missing = worker.request("inspect", source=str(folders["bert"]), **{"class": None})[1]
    assert (missing["code"], missing["field"]) == ("bad_request", "task")
    relative = inspect(worker, "models/bert")
    assert (relative["code"], relative["field"]) == ("bad_request", "source")
    unknown = inspect(worker, folders["bert"], "BertModle")
    assert unknown["code"] == "unknown_class" and "BertModel" in unknown["message"]
    no_mapping = inspect(worker, folders["vit"], "AutoModelForCausalLM", "text-generation")
    assert no_mapping["code"] == "unknown_class" and "text-generation" in no_mapping["message"], no_mapping
    absent = inspect(worker, folders["bert"].parent / "nowhere")
    assert absent["code"] == "load_failed"
    # The worker is still up after every refusal.
    assert inspect(worker, folders["gpt2"])["type"] == "result"
