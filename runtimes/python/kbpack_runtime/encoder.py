"""Embed questions with the query encoder a .kbpack carries (`kbc build --with-encoder`), using only
numpy, onnxruntime and tokenizers: what a device runtime does, in Python. kbc is not imported.

    kbpack-encode KB.kbpack --probes probes.npy        # the bundle's probe texts -> kbc probe KB --vectors probes.npy
    kbpack-encode KB.kbpack "a question" --out q.f32   # one question, raw little-endian float32
    (python -m kbpack_runtime ..., or runtimes/python/kbpack_encoder.py ... from a clone, are the same)

    from kbpack_runtime import Encoder
    vector = Encoder.from_bundle("KB.kbpack").embed("a question")   # float32[dim]

It reads the header and section table (FORMAT.md §1), checks the SHA-256 of each section it uses,
and follows the manifest's `encoder` object: prompt, lower-casing, truncation, one text per run.

The graph and tokenizer are untrusted input (FORMAT.md §5.1): before onnxruntime or tokenizers sees
them, kbpack_runtime.guard walks the graph as protobuf and refuses external data (file paths),
custom-op domains, operators outside the BERT-family allow-list, subgraphs and tensors that declare
more than they hold, and the tokenizer for its size and nesting. The session is made from bytes with
options that keep it off the file system, and the command caps the process's address space
(--max-memory-mb) for the sizes a graph computes as it runs. A refused bundle is one line on stderr
and exit status 3, as in kbc.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys

import numpy as np

from .guard import EncoderRefusal, check_graph, check_tokenizer, session_options

HEADER = struct.Struct("<8sHHIQQ32s32s32s")
ENTRY = struct.Struct("<32s16sQQ32s32s")
MAX_SECTIONS = 1024
MAX_MANIFEST_BYTES = 64 << 20
MAX_PROMPT_CHARS = 4096
MAX_MEMORY_MB = 1536  # what a reader must hold for any bundle, beyond the bundle's own bytes
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Refused(Exception):
    """A bundle this runtime will not use: one line naming the section (the command exits 3)."""

    def __init__(self, section: str, reason: str):
        super().__init__(f"{section}: {reason}")


class Unusable(Exception):
    """Not a refusal of the bundle's bytes: the file cannot be read, or it carries no encoder
    (the command prints the line and exits 1)."""


def read_sections(path: str) -> tuple[dict, dict[str, bytes]]:
    """The manifest and a reader of checked section bytes, by name."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise Unusable(f"{path}: cannot read: {e.strerror}") from None
    if len(data) < HEADER.size:
        raise Refused("header", "not a kbpack 1.x file, or truncated")
    magic, major, minor, count, table_offset, length, _, _, _ = HEADER.unpack_from(data, 0)
    if magic != b"KBPACK\0\0" or major != 1 or length != len(data) or count > MAX_SECTIONS \
            or table_offset < HEADER.size or table_offset + 128 * count != length:
        raise Refused("header", "not a kbpack 1.x file, or truncated")
    table = {}
    for i in range(count):
        name, encoding, offset, size, sha, _ = ENTRY.unpack_from(data, table_offset + 128 * i)
        try:
            name = name.rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError:
            raise Refused("table", f"entry {i} has a malformed name") from None
        if offset < HEADER.size or offset + size > table_offset:
            raise Refused(name, "section out of bounds")
        table[name] = (offset, size, sha)

    def section(name: str) -> bytes:
        if not isinstance(name, str) or name not in table:
            raise Refused(str(name)[:80], "section is missing")
        offset, size, sha = table[name]
        body = data[offset:offset + size]
        if hashlib.sha256(body).digest() != sha:
            raise Refused(name, "sha256 mismatch")
        return body

    if "manifest" not in table or table["manifest"][1] > MAX_MANIFEST_BYTES:
        raise Refused("manifest", f"missing or over {MAX_MANIFEST_BYTES} bytes")
    manifest = _json(section("manifest"), "manifest")
    if not isinstance(manifest, dict):
        raise Refused("manifest", "is not a JSON object")
    return manifest, section


def _json(raw: bytes, name: str):
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise Refused(name, f"invalid JSON: {str(e)[:200]}") from None


def _meta(manifest: dict) -> dict:
    """The manifest's `encoder` object, every field this script uses of the type FORMAT.md §2.6 says."""
    meta = manifest["encoder"]
    ok = (isinstance(meta, dict)
          and all(isinstance(meta.get(k), str) for k in ("graph", "tokenizer", "graph_sha256", "output", "query_prompt"))
          and len(meta["query_prompt"]) <= MAX_PROMPT_CHARS and isinstance(meta.get("do_lower_case"), bool)
          and isinstance(meta.get("inputs"), list) and meta["inputs"] and all(i in INPUTS for i in meta["inputs"])
          and isinstance(meta.get("max_seq_length"), int) and not isinstance(meta["max_seq_length"], bool)
          and 1 <= meta["max_seq_length"] <= 1 << 16)
    if not ok:
        raise Refused("manifest", "encoder: not an object with the fields and types of FORMAT.md §2.6")
    return meta


class Encoder:
    """The bundle's query encoder, checked and loaded: embed(question) -> float32[dim]."""

    @classmethod
    def from_bundle(cls, path: str) -> "Encoder":
        """Reads the bundle at `path` (whole, into memory) and loads its encoder; Refused if it
        has none usable. Callers running untrusted bundles also cap memory (limit_memory)."""
        return cls(*read_sections(path))

    def __init__(self, manifest: dict, section):
        if manifest.get("encoder") is None:  # said before the imports, which an interpreter without onnxruntime fails
            raise Unusable("this bundle carries no encoder (build it with kbc build --with-encoder)")
        meta = _meta(manifest)
        vectors = manifest.get("vectors")
        self.dim = vectors.get("dim") if isinstance(vectors, dict) else None
        import onnxruntime as ort
        from tokenizers import Tokenizer

        graph = section(meta["graph"])
        if hashlib.sha256(graph).hexdigest() != meta["graph_sha256"]:
            raise Refused(meta["graph"], "encoder graph differs from the manifest's graph_sha256")
        tokenizer = section(meta["tokenizer"])
        try:  # before onnxruntime or tokenizers sees a byte of them
            check_graph(graph)
        except EncoderRefusal as e:
            raise Refused(meta["graph"], str(e)) from None
        try:
            check_tokenizer(tokenizer)
        except EncoderRefusal as e:
            raise Refused(meta["tokenizer"], str(e)) from None
        self.meta = meta
        try:
            self.tokenizer = Tokenizer.from_str(tokenizer.decode("utf-8"))
            self.tokenizer.enable_truncation(max_length=meta["max_seq_length"])
            self.tokenizer.no_padding()
        except BaseException as e:  # a Rust panic arrives as a BaseException
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise Refused(meta["tokenizer"], f"tokenizers cannot load it: {str(e)[:200]}") from None
        options = session_options(ort)
        options.intra_op_num_threads = 1  # one text per run, as the build ran it
        options.log_severity_level = 4  # errors are this script's one line
        try:  # from bytes, never a path
            self.session = ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise Refused(meta["graph"], f"onnxruntime cannot load it: {str(e).splitlines()[0][:200] if str(e) else e}") from None

    def embed(self, question: str) -> np.ndarray:
        text = self.meta["query_prompt"] + question
        enc = self.tokenizer.encode(text.lower() if self.meta["do_lower_case"] else text)
        n = len(enc.ids)
        feed = {"input_ids": np.asarray([enc.ids], dtype=np.int64),
                "attention_mask": np.ones((1, n), dtype=np.int64),
                "token_type_ids": np.zeros((1, n), dtype=np.int64)}
        try:
            out = self.session.run([self.meta["output"]], {k: feed[k] for k in self.meta["inputs"]})[0]
        except Exception as e:
            raise Refused(self.meta["graph"], f"onnxruntime cannot run it: {str(e).splitlines()[0][:200] if str(e) else e}") from None
        out = np.asarray(out)
        if out.dtype != np.float32 or out.shape != (1, self.dim):
            raise Refused(self.meta["graph"], f"output {out.dtype} {list(out.shape)} is not one {self.dim}-d float32 vector")
        return out[0]


def limit_memory(path: str, megabytes: int) -> None:
    """Shapes a graph computes as it runs (ConstantOfShape, Expand, Range of computed sizes) are
    beyond what the walk can bound: the process's address space is capped instead, so such a
    graph fails to allocate (one line, exit 3) rather than exhausting the device."""
    try:
        import os
        import resource
    except ImportError:  # not POSIX: no cap
        return
    if megabytes <= 0:
        return
    try:
        size = os.stat(path).st_size
    except OSError:
        return  # read_sections says why
    want = size + (megabytes << 20)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft == resource.RLIM_INFINITY or want < soft:
        resource.setrlimit(resource.RLIMIT_AS, (want, hard))


def main() -> None:
    ap = argparse.ArgumentParser(prog="kbpack-encode", description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("question", nargs="?")
    ap.add_argument("--probes", help="embed the bundle's probe texts into this .npy file")
    ap.add_argument("--out", help="write the question's vector here (raw float32, little-endian)")
    ap.add_argument("--max-memory-mb", type=int, default=MAX_MEMORY_MB,
                    help=f"address space allowed beyond the bundle's own size (default {MAX_MEMORY_MB}; 0: no limit)")
    a = ap.parse_args()
    try:
        limit_memory(a.bundle, a.max_memory_mb)
        manifest, section = read_sections(a.bundle)
        encoder = Encoder(manifest, section)
        if a.probes:
            probes = _json(section("probes"), "probes")
            if not isinstance(probes, dict) or not isinstance(probes.get("probes"), list) or not all(
                    isinstance(p, dict) and isinstance(p.get("text"), str) for p in probes["probes"]):
                raise Refused("probes", "malformed: expected an object with a list of {text} probes")
            rows = [encoder.embed(p["text"]) for p in probes["probes"]]
            np.save(a.probes, np.stack(rows).astype(np.float32) if rows else np.zeros((0, encoder.dim), np.float32))
        if a.question is not None:
            vector = encoder.embed(a.question).astype("<f4")
            (open(a.out, "wb") if a.out else sys.stdout.buffer).write(vector.tobytes())
    except Refused as e:
        print(f"{a.bundle}: {e}", file=sys.stderr)
        sys.exit(3)
    except Unusable as e:
        print(e, file=sys.stderr)
        sys.exit(1)
    except MemoryError:
        print(f"{a.bundle}: encoder: needs more than --max-memory-mb {a.max_memory_mb} beyond the bundle", file=sys.stderr)
        sys.exit(3)
    assert sys.modules.get("kbc") is None  # the point of this package: a device needs nothing from kbc


if __name__ == "__main__":
    main()
