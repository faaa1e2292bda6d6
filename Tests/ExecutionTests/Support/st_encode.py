"""Independent check of a sentence-transformers bundle: its model.pt on real sentences (padded to a length, cut at
it by the tokenizer) against SentenceTransformer(folder).encode() with max_seq_length at that length, at the
[batch, length] points given. Prints one JSON line: per point the smallest per-row cosine of sentence_embedding."""
from __future__ import annotations

import json
import sys

import torch
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "The cat sits outside.", "A man is playing guitar.", "I love pasta with fresh basil and a little garlic.",
    "Do you know when the next train to Berlin leaves the station?", "The new phone has a great camera.",
    "Three children were building a sandcastle on the beach while their parents read books nearby.",
    "What is the boiling point of water?", "Stock markets fell sharply after the announcement.",
]


def main() -> None:
    bundle, folder, points = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    names = [s["name"] for s in json.load(open(f"{bundle}/record.json"))["input_signature"]]
    artifact = torch.jit.load(f"{bundle}/model.pt").eval()
    pipeline = SentenceTransformer(folder, device="cpu")
    out = []
    for batch, length in points:
        texts = [SENTENCES[i % len(SENTENCES)] for i in range(batch)]
        encoded = pipeline.tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        args = [encoded[n] if n in encoded else torch.zeros_like(encoded["input_ids"]) for n in names]
        pipeline.max_seq_length = length
        with torch.no_grad():
            got = artifact(*args)
            want = pipeline.encode(texts, convert_to_tensor=True)
        cosine = torch.nn.functional.cosine_similarity(got[1], want, dim=-1)
        out.append({"shape": [batch, length], "min_cosine": float(cosine.min()), "outputs": len(got)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
