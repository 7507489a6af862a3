"""kbpack_runtime: the Python side of a device that reads kbc's .kbpack bundles (schemas/FORMAT.md).

guard    the checks an encoder graph and tokenizer.json pass before onnxruntime or tokenizers reads
         them (FORMAT.md §5.1); kbc itself imports them from here, so there is one copy
encoder    the bundle's own query encoder: Encoder.from_bundle(path).embed(question) -> float32[dim],
           and the `kbpack-encode` command
libkbpack  search and chunks through libkbpack (runtimes/c, the C library every runtime uses) by
           ctypes: Bundle(path, library=...).search(vector, question, k, mode), .chunk(id)

Depends on numpy, onnxruntime and tokenizers only, and never imports kbc: a device installs this
package alone (pip install runtimes/python). examples/search.py puts the three together.
"""

from .encoder import Encoder, Refused, Unusable
from .guard import EncoderRefusal

__all__ = ["Encoder", "EncoderRefusal", "Refused", "Unusable"]
