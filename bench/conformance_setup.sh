#!/usr/bin/env bash
# Set up llama.cpp for `make conformance`: llama-cpp-python built from its PyPI sdist in its own
# venv, and the default model converted to GGUF (f32, q8_0) with the converter the sdist vendors.
# Idempotent; everything lives under $1 (default .conformance).
set -euo pipefail
DIR=$(realpath -m "${1:-.conformance}")
KBC_PYTHON=$(realpath -s "${KBC_PYTHON:-.venv/bin/python}")
VERSION=0.3.36
mkdir -p "$DIR"
if [ ! -x "$DIR/venv/bin/python" ] || ! "$DIR/venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  python3 -m venv "$DIR/venv"
  "$DIR/venv/bin/pip" install -q numpy
  echo "compiling llama-cpp-python $VERSION (about 5 minutes on 2 cores)..."
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$DIR/venv/bin/pip" install -q "llama-cpp-python==$VERSION"
fi
SRC="$DIR/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [ ! -f "$SRC/convert_hf_to_gguf.py" ]; then
  "$DIR/venv/bin/pip" download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$DIR/sdist"
  tar xzf "$DIR/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$DIR"
fi
MODEL=$("$KBC_PYTHON" -c "from kbc.embed import resolve_model; print(resolve_model(None).path)")
for q in f32 q8_0; do
  if [ ! -f "$DIR/minilm-$q.gguf" ]; then
    # the converter needs torch, transformers and numpy: kbc's venv has them
    (cd "$SRC" && PYTHONPATH=gguf-py "$KBC_PYTHON" convert_hf_to_gguf.py "$MODEL" --outtype "$q" \
       --outfile "$DIR/minilm-$q.gguf" >"$DIR/convert-$q.log" 2>&1) || { echo "GGUF conversion ($q) failed: see $DIR/convert-$q.log"; exit 1; }
  fi
done
echo "llama.cpp ready in $DIR"
