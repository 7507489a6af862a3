"""Error types. Each carries the process exit code the CLI uses, so CI can tell failures apart.

Exit codes (documented in docs/configuration.md):
  0  success
  1  unexpected internal error (a bug: please report it)
  2  bad input or usage: missing path, no supported files, bad option, output not writable
  3  bundle invalid: corrupt, truncated, wrong magic, unsupported version, checksum mismatch
  4  model problem: not found locally, or does not match the model recorded in a bundle
  5  --strict build found skipped or degraded files (no output written)
  6  kbc probe: the device's probe vectors disagree with the bundle
  7  kbc diff: the bundles differ
  8  kbc eval --fail-under: a metric is under its threshold
"""

from __future__ import annotations

# How error messages name options: as the library's keyword arguments (`chunk_size`) by default;
# the CLI switches to its flags (`--chunk-size`) before it runs a command.
_CLI_NAMES = False


def use_cli_option_names(on: bool = True) -> None:
    global _CLI_NAMES
    _CLI_NAMES = on


def cli_names() -> bool:
    return _CLI_NAMES


def option(name: str, flag: str | None = None) -> str:
    """An option's name in an error message: `chunk_size` for a library caller, `--chunk-size` (or
    `flag`, where the CLI spells it otherwise) under the CLI."""
    if not _CLI_NAMES:
        return name
    return flag or "--" + name.replace("_", "-")


class KbcError(Exception):
    """Base class: a problem kbc can describe in one line."""

    exit_code = 1


class InputError(KbcError):
    exit_code = 2


class BundleError(KbcError):
    """The bundle file is not a valid .kbpack (or not one this reader supports).

    `section` names the part of the file that is wrong ("header", "table", a section name,
    or "file") so that `kbc inspect --verify` can say where the damage is.
    """

    exit_code = 3

    def __init__(self, message: str, *, section: str = "file", path: str | None = None):
        self.section = section
        self.path = path
        self.detail = message
        prefix = f"{path}: " if path else ""
        super().__init__(f"{prefix}{section}: {message}")


class ModelError(KbcError):
    exit_code = 4


class StrictError(KbcError):
    exit_code = 5
