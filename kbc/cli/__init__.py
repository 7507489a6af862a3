"""The `kbc` command line: parses options, calls the library, prints. Nothing else lives here.

One module per command or concern: app.py (the typer app, errors, JSON, progress), cmd_build.py, cmd_query.py,
cmd_inspect.py, cmd_eval.py, cmd_tools.py (export, probe, diff), cmd_cache.py, render.py (human renderings), and
config.py (kbc.toml). Importing this package registers every command on `app`."""

from __future__ import annotations

import sys

import typer

# each registers its commands on import, in the order `kbc -h` lists them
from . import cmd_build, cmd_query, cmd_inspect, cmd_eval, cmd_tools, cmd_cache  # noqa: F401, I001
from .app import _fail, _term, app


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
