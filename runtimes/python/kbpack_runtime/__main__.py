"""python -m kbpack_runtime ...: the kbpack-encode command (kbpack_runtime.encoder.main)."""

from .encoder import main

main()
