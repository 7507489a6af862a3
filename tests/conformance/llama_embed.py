"""Embed kbc probe inputs with llama.cpp (llama-cpp-python); runs in its own venv, not kbc's.

    python llama_embed.py PROBES.json MODEL.gguf OUT.npy {as-is|truncate}

PROBES.json is `kbc probe KB --texts --json`. `as-is` is what a device gets by calling
`Llama.embed()` with a context large enough for every input: llama.cpp does not cut the input at
the model's max_seq_length. `truncate` cuts each token list the way sentence-transformers does:
the first max_seq_length - 1 tokens, then the closing [SEP].
"""

import json
import sys

import numpy as np
from llama_cpp import Llama


def main() -> None:
    probes_path, gguf, out, mode = sys.argv[1:5]
    probes = json.load(open(probes_path, encoding="utf-8"))
    limit = int(probes["max_seq_length"])
    llm = Llama(model_path=gguf, embedding=True, n_ctx=1024, n_batch=1024, n_ubatch=1024, verbose=False)
    if mode == "truncate":
        tokenize = llm.tokenize

        def truncating(text: bytes, add_bos: bool = True, special: bool = False):
            tokens = tokenize(text, add_bos, special)
            return tokens if len(tokens) <= limit else tokens[:limit - 1] + tokens[-1:]

        llm.tokenize = truncating
    elif mode != "as-is":
        raise SystemExit(f"mode must be as-is or truncate, not {mode!r}")
    vectors = [llm.embed(p["input"], normalize=True) for p in probes["probes"]]
    np.save(out, np.asarray(vectors, dtype=np.float32))


if __name__ == "__main__":
    main()
