"""`kbc build`: its flags (read off kbc.options.BUILD_OPTIONS) -> kbc.pipeline.build -> the summary."""

from __future__ import annotations

import inspect
import sys
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..errors import InputError
from ..options import BUILD_OPTIONS, BY_KEY, BuildOption, from_keys
from ..readers import supported_suffixes
from .progress import MODES, open_progress
from .typer_app import _emit_json, _fold_float16, _human_bytes, _safe, app, handle_errors, quote_name

ProgressMode = Enum("ProgressMode", {m: m for m in MODES}, type=str)


def _typer_parameter(o: BuildOption) -> inspect.Parameter:
    """The typer option of one declared build option, named by its key (its flag without dashes)."""
    default = o.default_value()
    if o.kind == "bool":  # a switch: on when given (a negated option's key holds the flag's value)
        annotation, default = bool, False
    elif o.choices is not None:
        names = o.names()
        annotation = Enum(f"{o.key}_choice", {n: n for n in names}, type=str)
        annotation = annotation if default is not None else Optional[annotation]
    else:
        base = {"str": str, "int": int, "number": float, "path": Path, "list": str, "paths": Path}[o.kind]
        annotation = List[base] if o.kind in ("list", "paths") else base if default is not None else Optional[base]
    decls = [o.cli_flag + (f"/--no-{o.cli_flag[2:]}" if o.both_ways else "")] + ([o.short] if o.short else [])
    return inspect.Parameter(o.key, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *decls, help=o.help_text()))


def _with_build_options(command):
    """`command`'s signature with one typer option per BUILD_OPTIONS entry, placed after its
    arguments (paths, -o) and before its own options (-q, --json, --config, ...): typer reads the
    signature, and the command receives them as keyword arguments."""
    signature = inspect.signature(command, eval_str=True)
    own = list(signature.parameters.values())
    first_own = next(i for i, p in enumerate(own) if p.kind == inspect.Parameter.KEYWORD_ONLY)
    params = own[:first_own] + [_typer_parameter(o) for o in BUILD_OPTIONS] + \
        [p for p in own[first_own:] if p.kind != inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@handle_errors
def build(
    ctx: typer.Context,
    paths: List[Path] = typer.Argument(..., help=f"Files and folders to compile ({', '.join(supported_suffixes())})."),
    output: Path = typer.Option(..., "-o", "--output", help="The .kbpack file to write (atomically)."),
    *,
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars and no summary."),
    as_json: bool = typer.Option(False, "--json", help="Print the build summary as JSON on stdout."),
    config: Optional[Path] = typer.Option(None, "--config", help="Options from this TOML file (default: the nearest "
                                          "kbc.toml, or [tool.kbc] in a pyproject.toml, from the first input up)."),
    no_config: bool = typer.Option(False, "--no-config", help="Ignore any kbc.toml / [tool.kbc]."),
    from_bundle: Optional[Path] = typer.Option(None, "--from-bundle", help="Start from the options an earlier "
                                               "bundle was built with (its manifest's build_options)."),
    progress_mode: ProgressMode = typer.Option("auto", "--progress", envvar="KBC_PROGRESS",
                                               help="auto: bars on a terminal, plain lines (done/total, rate, time "
                                               "left; at least every 30 s) when stderr is a file or pipe such as a "
                                               "CI log, none with -q or --json; or choose one."),
    **flags: Any,
):
    """Compile documents into one .kbpack: extract -> chunk -> embed -> index -> write.

    Options come from kbc's defaults, then --from-bundle, then the config file, then these flags.

    Example: kbc build docs/ -o kb.kbpack --exclude drafts --chunk-size 200"""
    from ..pipeline import build as run_build
    from .config import RECORDED, checked_options, find_config, load_config

    keyed = {o.key: _plain(ctx.params[o.key]) for o in BUILD_OPTIONS}
    given = {k for k in keyed if getattr(ctx.get_parameter_source(k), "name", "") in ("COMMANDLINE", "ENVIRONMENT")}
    stored: dict = {}
    if from_bundle is not None:
        from ..format.bundle import Bundle

        with Bundle(from_bundle) as old:
            record = old.manifest.get("build_options")
        if not isinstance(record, dict):
            raise InputError(f"{from_bundle}: records no build options (built before kbc recorded them)")
        where = f"{from_bundle} build_options"
        stored = _fold_float16(checked_options(record, where=where, allowed=RECORDED), where=where)
    config_file = config if config is not None else (None if no_config else find_config(paths))
    configured = _fold_float16(load_config(config_file), where=str(config_file)) if config_file is not None else {}
    if "float16" in given:  # the flag is --vectors f16 given on the command line
        if "vectors" in given and keyed["vectors"] != "f16":
            raise InputError(f"--float16 and --vectors {keyed['vectors']} disagree: pass one of them")
        keyed["vectors"] = "f16"
        given.add("vectors")
    own = {**keyed, **{k: v for k, v in configured.items() if k not in given}}
    for key, value in stored.items():
        if not BY_KEY[key].bundle_chooses and value != own[key]:
            flag = BY_KEY[key].cli_flag
            raise InputError(f"{from_bundle}: was built with {flag} {_safe(str(value))[:200]}; a bundle does not choose "
                             f"the {key.replace('_', ' ')} that runs on this machine: pass {flag} yourself to rebuild with it")
    keyed = {**keyed, **{k: v for k, v in stored.items() if k not in given}}
    keyed.update({k: v for k, v in configured.items() if k not in given})
    keyed.pop("float16")  # folded into vectors in every layer; the record spells both again
    with open_progress(progress_mode.value, stream=sys.stderr, quiet=quiet or as_json) as progress:
        report = run_build(paths, output, **from_keys(keyed, where="kbc build"),
                           config_file=str(config_file) if config_file else None, progress=progress)
    if as_json:
        _emit_json(report.to_dict())
        return
    if quiet:
        return
    s = report.seconds
    e = report.embedder
    out = [f"built {quote_name(report.output)} ({_human_bytes(report.output_bytes)}) in {s.get('total', 0):.1f} s",
           f"  files {report.files}, pages {report.pages}, chunks {report.chunks}, truncated {report.truncated_chunks} "
           f"(longest {report.max_chunk_tokens}/{e['max_seq_length']} tokens)",
           f"  embedder {e['name']} {e['dim']}-d, {e['backend']} {e['precision']}; vectors {report.vectors}; "
           f"index {report.index['factory']}",
           "  seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items() if k != "total")]
    if report.config_file:
        out.insert(1, f"  options from {quote_name(report.config_file)} (flags override it)")
    if report.cache:
        c = report.cache
        out.append(f"  cache: {c.get('files_cached', 0)} files and {c.get('chunks_cached', 0)} chunks reused, "
                   f"{c.get('files_extracted', 0)} files extracted, {c.get('chunks_embedded', 0)} chunks embedded")
    for label, items in (("skipped", report.skipped), ("degraded", report.degraded)):
        if items:
            out.append(f"  {label} ({len(items)}):")
            out += [f"    {quote_name(p.source)}: {_safe(p.reason)}" for p in items]
    if report.ignored:
        shown = report.ignored[:20]
        out.append(f"  not built ({len(report.ignored)}; all in --json, the first 1,000 in the manifest):")
        out += [f"    {quote_name(i['path'])}: {_safe(i['reason'])}" for i in shown]
        if len(report.ignored) > len(shown):
            out.append(f"    ... and {len(report.ignored) - len(shown)} more")
    print("\n".join(out))


build = app.command()(_with_build_options(build))
