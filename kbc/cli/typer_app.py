"""The typer app and what every command shares: one-line errors and exit codes, JSON output, progress.

It imports no registry (readers, backends, engines, exporters): `kbc query` loads only its own command
module (kbc.cli's main), and the option choices that list a registry live in kbc.cli.choices."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
from pathlib import Path

import typer

from ..errors import InputError, KbcError, cli_names, use_cli_option_names


app = typer.Typer(
    add_completion=True, no_args_is_help=True, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="kbc compiles documents into one verified .kbpack knowledge-base file for offline RAG.\n\n"
         "Exit codes: 0 ok, 1 internal error, 2 bad input, 3 invalid bundle, 4 model problem, "
         "5 --strict build found problems, 6 probe vectors disagree with the bundle, "
         "7 kbc diff: the bundles differ.")


# Characters that must not reach a terminal or a log raw: C0 and C1 controls (newline splits a log
# line, ESC starts a sequence that recolours or clears a terminal), DEL, the Unicode line and
# paragraph separators, and the bidirectional overrides that make a name read backwards.
_UNSAFE = frozenset([*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F),
                     *range(0x2066, 0x206A)])
_C_ESCAPES = {"\a": "\\a", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\v": "\\v", "\f": "\\f", "\r": "\\r"}


def _escape(ch: str) -> str:
    """One unsafe character as C writes it: \\n, \\t, ..., else its UTF-8 bytes in octal (ESC is
    \\033), as git quotes a path."""
    return _C_ESCAPES.get(ch) or "".join(f"\\{b:03o}" for b in ch.encode("utf-8", "surrogateescape"))


def _needs_escaping(text: str) -> bool:
    return any(ord(c) in _UNSAFE or 0xD800 <= ord(c) <= 0xDFFF for c in text)


def quote_name(name) -> str:
    """A file or source name for human output, as git and ls show an odd one: unchanged when it
    holds no control character, else in double quotes with C escapes ("a\\nb.md", "\\033[31mx.md"),
    so that one name stays one token on one line. --json output keeps the exact name."""
    name = str(name)
    if not _needs_escaping(name):
        return name
    out = []
    for c in name:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) in _UNSAFE or 0xD800 <= ord(c) <= 0xDFFF:  # (a lone surrogate: an undecodable byte)
            out.append(_escape(c))
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _safe(text: str) -> str:
    """Text from a bundle or a document (a chunk's words, a reason, a condition) on one line: control
    characters written as C escapes, without quotes; names go through quote_name."""
    text = str(text)
    if not _needs_escaping(text):
        return text
    return "".join(_escape(c) if ord(c) in _UNSAFE or 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def _term(signum, frame) -> None:
    """SIGTERM (CI cancelling a job) unwinds like Ctrl-C, so a half-written bundle's temporary
    file is removed instead of left behind. Both first kill the extraction workers (when a build
    runs some): waiting for the files they read took seconds, up to --file-timeout."""
    workers = sys.modules.get("kbc.engines.workers")  # imported by a build only; a query never loads it
    if workers is not None:
        workers.interrupt_workers()
    raise KeyboardInterrupt


def _fail(message: str, code: int) -> None:
    """One line on stderr; with --json also an `error` object on stdout, so a machine reading
    stdout gets an answer whatever happened."""
    print(f"kbc: error: {_safe(message)}", file=sys.stderr)  # one line, whatever names it holds; JSON: exact
    if "--json" in sys.argv[1:]:
        sys.stdout.write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        from ..format.layout import FORMAT_MAJOR, FORMAT_MINOR

        print(f"kbc {__version__} (writes .kbpack format {FORMAT_MAJOR}.{FORMAT_MINOR})")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                       help="Print kbc's version and the bundle format it writes, then exit.")) -> None:
    """kbc compiles documents into one verified .kbpack knowledge-base file for offline RAG."""


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        was = cli_names()
        use_cli_option_names(True)  # errors name --flags here; keyword arguments in library use
        interrupt = _handle_sigint()
        try:
            return fn(*args, **kwargs)
        except KbcError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            print("kbc: interrupted", file=sys.stderr)
            raise typer.Exit(130)
        except typer.Exit:
            raise
        except BrokenPipeError:
            raise typer.Exit(0)
        except OSError as e:  # disk full, read-only or vanished output: the system's words, one line
            if os.environ.get("KBC_DEBUG"):
                raise
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            _fail(f"{where}{e.strerror or e}", 2)
        except Exception as e:  # a bug: say so in one line; KBC_DEBUG=1 shows the traceback
            if os.environ.get("KBC_DEBUG"):
                raise
            _fail(f"internal error: {type(e).__name__}: {e} (set KBC_DEBUG=1 for a traceback)", 1)
        finally:
            use_cli_option_names(was)
            if interrupt is not None:
                signal.signal(signal.SIGINT, interrupt)
    return wrapper


def _handle_sigint():
    """Ctrl-C goes through _term while a command runs (the handler it replaces comes back after:
    tests run commands inside pytest). None outside the main thread, where no handler can be set,
    and where SIGINT was ignored when kbc started (nohup, a shell's background job): it stays so."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        return None
    return signal.signal(signal.SIGINT, _term)


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _Progress(enabled: bool):
    """rich progress bars with the time left (kbc.cli.progress) when enabled; nothing otherwise."""
    from .progress import BarProgress, NoProgress

    return BarProgress() if enabled else NoProgress()


def _fold_float16(options: dict, *, where: str) -> dict:
    """`float16 = true` (a config file, an older bundle's build_options) is `vectors = "f16"`."""
    if not options.get("float16"):
        return options
    if options.get("vectors", "f16") != "f16":
        raise InputError(f"{where}: float16 and vectors {options['vectors']!r} disagree: keep one of them")
    return {**options, "vectors": "f16"}


def _load_reranker(path: Path | None):
    if path is None:
        return None
    from ..query.rerank import load_reranker

    return load_reranker(path)
