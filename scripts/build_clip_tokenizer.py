"""Build a Hugging Face CLIPTokenizer folder from the BPE file that ships in open_clip_torch.

Usage: python scripts/build_clip_tokenizer.py BPE_GZ OUT_DIR

The vocabulary and merges are exactly those of OpenAI CLIP (49,408 tokens), laid out as
transformers expects (vocab.json + merges.txt), so the tokenizer of every Stable Diffusion 1.x
checkpoint and ours agree token for token.
"""

import gzip
import json
import sys
from pathlib import Path

from transformers.convert_slow_tokenizer import bytes_to_unicode

VOCAB_SIZE = 49408


def build(bpe_gz: Path, out_dir: Path) -> None:
    merges = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]  # as in OpenAI CLIP
    merges = [tuple(merge.split()) for merge in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(merge) for merge in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB_SIZE, len(vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    lines = ["#version: 0.2"] + [" ".join(m) for m in merges]
    (out_dir / "merges.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
