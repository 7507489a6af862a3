"""kbpack_runtime: the Python side of a device that reads kbc's .kbpack bundles (schemas/FORMAT.md).

guard    the checks an encoder graph and tokenizer.json pass before onnxruntime or tokenizers reads
         them (FORMAT.md §5.1); kbc itself imports them from here, so there is one copy
encoder  the bundle's own query encoder: Encoder.from_bundle(path).embed(question) -> float32[dim],
         and the `kbpack-encode` command

Depends on numpy, onnxruntime and tokenizers only, and never imports kbc: a device installs this
package alone (pip install runtimes/python). Searching a bundle is libkbpack's job (runtimes/c).
"""

from .encoder import Encoder, Refused, Unusable
from .guard import EncoderRefusal

__all__ = ["Encoder", "EncoderRefusal", "Refused", "Unusable"]
