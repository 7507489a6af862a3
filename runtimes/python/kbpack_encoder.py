"""runtimes/python/kbpack_encoder.py: the kbpack-encode command run from a clone without installing
anything beyond numpy, onnxruntime and tokenizers (the README and FORMAT.md give this path). The
code is the kbpack_runtime package beside this file; Python puts this file's folder on sys.path.

    python runtimes/python/kbpack_encoder.py KB.kbpack "a question" --out q.f32
"""

from kbpack_runtime.encoder import main

if __name__ == "__main__":
    main()
