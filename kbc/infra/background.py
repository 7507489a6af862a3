"""One call run in a thread while the caller does other work: the build loads the model while it walks
the folder, and a cold query loads the model while it reads the index and scores the lexical side
(onnxruntime and FAISS release the GIL for part of their work, so the two partly overlap)."""

from __future__ import annotations

import threading
import time


class Background:
    """One call run in a thread; `result()` waits for it and returns its value or raises its error."""

    def __init__(self, call, *, name: str):
        self._call, self._value, self._error, self.seconds = call, None, None, 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        t = time.perf_counter()
        try:
            self._value = self._call()
        except BaseException as e:  # raised in the thread that asks for the result
            self._error = e
        self.seconds = time.perf_counter() - t

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
