"""Embed questions with the query encoder a .kbpack carries (`kbc build --with-encoder`), using only
numpy, onnxruntime and tokenizers: what a device runtime does, shown in Python. kbc is not imported.

    python kbpack_encoder.py KB.kbpack --probes probes.npy    # the bundle's probe texts -> kbc probe KB --vectors probes.npy
    python kbpack_encoder.py KB.kbpack "a question" --out q.f32   # one question, raw little-endian float32

It reads the header and section table (FORMAT.md §1), checks the SHA-256 of each section it uses,
and follows the manifest's `encoder` object: prompt, lower-casing, truncation, one text per run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys

import numpy as np

HEADER = struct.Struct("<8sHHIQQ32s32s32s")
ENTRY = struct.Struct("<32s16sQQ32s32s")


def read_sections(path: str) -> tuple[dict, dict[str, bytes]]:
    """The manifest and a reader of checked section bytes, by name."""
    with open(path, "rb") as f:
        data = f.read()
    magic, major, minor, count, table_offset, length, _, _, _ = HEADER.unpack_from(data, 0)
    if magic != b"KBPACK\0\0" or major != 1 or length != len(data) or table_offset + 128 * count != length:
        raise SystemExit(f"{path}: not a kbpack 1.x file, or truncated")
    table = {}
    for i in range(count):
        name, encoding, offset, size, sha, _ = ENTRY.unpack_from(data, table_offset + 128 * i)
        if offset + size > table_offset:
            raise SystemExit(f"{path}: section out of bounds")
        table[name.rstrip(b"\0").decode("ascii")] = (offset, size, sha)

    def section(name: str) -> bytes:
        offset, size, sha = table[name]
        body = data[offset:offset + size]
        if hashlib.sha256(body).digest() != sha:
            raise SystemExit(f"{path}: {name}: sha256 mismatch")
        return body

    return json.loads(section("manifest")), section


class Encoder:
    def __init__(self, manifest: dict, section):
        meta = manifest.get("encoder")
        if meta is None:  # said before the imports, which an interpreter without onnxruntime fails
            raise SystemExit("this bundle carries no encoder (build it with kbc build --with-encoder)")
        import onnxruntime as ort
        from tokenizers import Tokenizer

        graph = section(meta["graph"])
        if hashlib.sha256(graph).hexdigest() != meta["graph_sha256"]:
            raise SystemExit("encoder graph differs from the manifest's graph_sha256")
        self.meta = meta
        self.tokenizer = Tokenizer.from_str(section(meta["tokenizer"]).decode("utf-8"))
        self.tokenizer.enable_truncation(max_length=meta["max_seq_length"])
        self.tokenizer.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # one text per run, as the build ran it
        self.session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])

    def embed(self, question: str) -> np.ndarray:
        text = self.meta["query_prompt"] + question
        enc = self.tokenizer.encode(text.lower() if self.meta["do_lower_case"] else text)
        n = len(enc.ids)
        feed = {"input_ids": np.asarray([enc.ids], dtype=np.int64),
                "attention_mask": np.ones((1, n), dtype=np.int64),
                "token_type_ids": np.zeros((1, n), dtype=np.int64)}
        return self.session.run([self.meta["output"]], {k: feed[k] for k in self.meta["inputs"]})[0][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("question", nargs="?")
    ap.add_argument("--probes", help="embed the bundle's probe texts into this .npy file")
    ap.add_argument("--out", help="write the question's vector here (raw float32, little-endian)")
    a = ap.parse_args()
    manifest, section = read_sections(a.bundle)
    encoder = Encoder(manifest, section)
    if a.probes:
        probes = json.loads(section("probes"))
        np.save(a.probes, np.stack([encoder.embed(p["text"]) for p in probes["probes"]]).astype(np.float32))
    if a.question is not None:
        vector = encoder.embed(a.question).astype("<f4")
        (open(a.out, "wb") if a.out else sys.stdout.buffer).write(vector.tobytes())
    assert "kbc" not in sys.modules  # the point of this script: a device needs nothing from kbc


if __name__ == "__main__":
    main()
