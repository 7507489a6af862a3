"""Source code and configuration files, read only with `--code`: a docs folder's scripts are
usually not what a knowledge base is for, but a code base's are. The text is kept as written
(indentation means something), its encoding detected like any text file's; every chunk's context
names the file's path, as for any document."""

from __future__ import annotations

from ..records import Extracted, Problem, SourceFile
from .textclean import join_pages
from . import ReadOptions, register_reader
from .text import decode_text

SUFFIXES = (
    ".py", ".pyi", ".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".vue", ".svelte",
    ".go", ".rs", ".java", ".kt", ".kts", ".scala", ".swift", ".m", ".mm",
    ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".hxx", ".cs", ".fs",
    ".rb", ".php", ".pl", ".pm", ".lua", ".r", ".jl", ".dart", ".ex", ".exs", ".erl", ".hs", ".clj", ".zig",
    ".sh", ".bash", ".zsh", ".fish", ".ps1", ".bat", ".sql", ".proto", ".graphql",
    ".toml", ".yaml", ".yml", ".ini", ".cfg", ".gradle", ".cmake",
)


@register_reader("code", suffixes=SUFFIXES, opt_in=True,
                 description="source code and config files, as written (only with --code)")
def read_code(src: SourceFile, data: bytes, out: Extracted, opts: ReadOptions) -> None:
    text = decode_text(src, data, out, opts)
    if text is None:
        return
    out.page_count = 1
    # only line ends and trailing blanks are normalised: indentation and blank lines stay
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")).strip("\n")
    if not text.strip():
        out.problems.append(Problem(src.rel, "skipped", "file is empty"))
        return
    out.documents.append(join_pages(src.rel, [text], [None]))
