"""Open a bundle, embed the question with the bundle's own encoder (kbpack_runtime.Encoder: numpy,
onnxruntime, tokenizers), search it with libkbpack (kbpack_runtime.libkbpack, ctypes), print the
best chunk with its source and page. kbc is not needed; tests/test_encoder.py runs this file.

    python runtimes/python/examples/search.py kb.kbpack "How do I rotate the logs?" \
        --library runtimes/c/build/libkbpack.so
(a bundle built with `kbc build --with-encoder`; without an encoder, --lexical searches by words only)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # kbpack_runtime from a clone, uninstalled

from kbpack_runtime import Encoder, Refused, Unusable  # noqa: E402
from kbpack_runtime.libkbpack import Bundle, KbpackError  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("question")
    ap.add_argument("--library", help="libkbpack.so (default: $KBPACK_LIBRARY, then the loader's search path)")
    ap.add_argument("--lexical", action="store_true", help="search by words only: no encoder needed")
    a = ap.parse_args()
    try:
        vector = None if a.lexical else Encoder.from_bundle(a.bundle).embed(a.question)
        with Bundle(a.bundle, library=a.library) as kb:
            hits = kb.search(vector, a.question, k=3, mode="lexical" if a.lexical else "default")
            if not hits:
                print("no match")
                return 0
            best_id, score = hits[0]
            best = kb.chunk(best_id)
    except Refused as e:  # a damaged or hostile encoder: one line, exit 3
        print(f"{a.bundle}: {e}", file=sys.stderr)
        return 3
    except KbpackError as e:  # as the `kbpack` tool exits: 3 for a damaged bundle, 2 for the rest
        print(f"{a.bundle}: {e}", file=sys.stderr)
        return 3 if e.status == "invalid" else 2
    except Unusable as e:
        print(e, file=sys.stderr)
        return 1
    page = f" p. {best['page_start']}" if "page_start" in best else ""
    print(f"{score:.4f} {best['source_path']}{page}\n{best['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
