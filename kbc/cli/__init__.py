"""The `kbc` command line: parses options, calls the library, prints. Nothing else lives here.

One module per command or concern: typer_app.py (the typer app, errors, JSON, progress), choices.py (option
choices that list a registry), cmd_build.py, cmd_query.py, cmd_inspect.py, cmd_eval.py, cmd_tools.py (export,
probe, diff), cmd_delta.py (delta, apply), cmd_cache.py, render.py (human renderings), and config.py
(kbc.toml). A command module registers its commands on `app` when imported: `kbc.cli.app` is the app with every command, and the `kbc`
entry point (main) imports only the module of the command it runs, so `kbc query` never imports the
readers, engines and exporters that `kbc build` needs (a tenth of a cold query's time)."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from .typer_app import _fail, _term

# Each command's module, in the order `kbc -h` lists them.
COMMAND_MODULES = {"build": "cmd_build", "query": "cmd_query", "inspect": "cmd_inspect", "eval": "cmd_eval",
                   "export": "cmd_tools", "probe": "cmd_tools", "diff": "cmd_tools", "delta": "cmd_delta",
                   "apply": "cmd_delta", "cache": "cmd_cache"}


def load_commands(names=None):
    """Registers the named commands (default: all) on the typer app and returns it."""
    from . import typer_app

    modules = COMMAND_MODULES.values() if names is None else [COMMAND_MODULES[n] for n in names]
    for module in dict.fromkeys(modules):
        importlib.import_module(f"{__name__}.{module}")
    return typer_app.app


def __getattr__(name: str):
    if name == "app":  # `from kbc.cli import app`: every command
        globals()["app"] = load_commands()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _command_word(argv: list[str]) -> str | None:
    """The command `kbc ARGV` runs, when only one module is needed for it: the first word that is
    not an option (kbc's own options take no value). Shell completion and help need every command."""
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return None
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMAND_MODULES else None


def _click_types() -> tuple[tuple, tuple, tuple]:
    """(usage errors, no-args-is-help, exits) from click and from the click that typer >= 0.22 vendors."""
    usage, no_args, exits = [], [], [typer.Exit]
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            mod = __import__(module, fromlist=["UsageError"])
        except ImportError:
            continue
        usage.append(mod.UsageError)
        if hasattr(mod, "NoArgsIsHelpError"):
            no_args.append(mod.NoArgsIsHelpError)
        if hasattr(mod, "Exit"):
            exits.append(mod.Exit)
    return tuple(usage), tuple(no_args), tuple(exits)


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _term)
    usage, no_args, exits = _click_types()
    try:
        word = _command_word(sys.argv[1:])
        app = load_commands(None if word is None else [word])
        code = app(standalone_mode=False)  # returns the exit code of a typer.Exit instead of raising it
        sys.exit(code if isinstance(code, int) else 0)
    except no_args as e:  # bare `kbc`: the overview, as `kbc -h` prints it
        print(e.format_message() if hasattr(e, "format_message") else str(e))
        sys.exit(2)
    except usage as e:  # unknown option, bad value, missing argument: one line, exit 2
        ctx = getattr(e, "ctx", None)
        where = f"kbc {ctx.info_name}" if ctx is not None and ctx.parent is not None else "kbc"
        try:
            _fail(" ".join(e.format_message().split()) + f" (see: {where} -h)", 2)
        except typer.Exit as done:
            sys.exit(done.exit_code)
    except exits as e:
        sys.exit(getattr(e, "exit_code", 0))
    except (typer.Abort, KeyboardInterrupt, EOFError):
        print("kbc: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
