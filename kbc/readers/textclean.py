"""Text cleaning shared by readers: ligatures, hyphenated line breaks, running headers and footers,
and the small judgements on headings and titles that give chunks their context."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from ..records import Document, Page


# Typographic ligatures and Latin presentation forms -> letters. Chosen over NFKC because NFKC also
# rewrites superscripts (x² -> x2), fractions, full-width CJK punctuation and more, changing meaning.
_LIGATURES = str.maketrans({
    "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st",
    "\u00ad": "",  # soft hyphen: invisible unless a line breaks there
    "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ",
    "\u200b": "", "\ufeff": "",
    # control characters (NULs and the like from broken text layers) carry no text; tabs, line
    # and page breaks are whitespace and handled below
    **{c: " " for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *range(0x80, 0xA0), 0xFFFE, 0xFFFF)},
})
_HYPHEN_BREAK = re.compile(r"([^\W\d_]+)-([ \t]*)\n[ \t]*(?=([^\W\d_]+))")
_HYPHENATED = re.compile(r"[^\W\d_]+-[^\W\d_]+")
_SPACES = re.compile(r"[ \t\f\v]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_PAGE_NUMBER = re.compile(r"^(?:page\s+)?[\divxlc]{1,6}(?:\s*(?:/|of)\s*\d{1,6})?$|^[-–—]\s*\d{1,6}\s*[-–—]$", re.I)


def clean_text(text: str) -> str:
    """Letters from ligatures, rejoined hyphenated line breaks, tidy whitespace; line breaks kept."""
    text = unicodedata.normalize("NFC", text.translate(_LIGATURES))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _rejoin_hyphen_breaks(text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def _rejoin_hyphen_breaks(text: str) -> str:
    """`exam-\nple` -> `example`; `non- \nnormal` and `well-\nknown` (when the document also has
    `well-known`) -> keep the hyphen. A space before the line break means the generator wrote a
    real hyphen; a typesetter's break has none."""
    if "-" not in text:
        return text
    hyphenated: set[str] | None = None

    def join(m: re.Match) -> str:
        nonlocal hyphenated
        first, space, second = m.group(1), m.group(2), m.group(3)
        if space or not second[0].islower():
            return f"{first}-"
        if hyphenated is None:
            hyphenated = {w.lower() for w in _HYPHENATED.findall(text)}
        return f"{first}-" if f"{first}-{second}".lower() in hyphenated else first

    return _HYPHEN_BREAK.sub(join, text)


def _line_key(line: str) -> str:
    return re.sub(r"\d+", "#", line.strip().lower())


def strip_running_lines(pages: list[str], *, edge: int = 2) -> list[str]:
    """Drop running headers/footers and bare page numbers.

    A line counts as running when it sits among the first or last `edge` lines of a page and the
    same line (digits ignored) sits there on at least half of the pages (and at least 3).
    """
    if not pages:
        return pages
    split = [p.split("\n") for p in pages]
    counts: Counter[str] = Counter()
    for lines in split:
        e = min(edge, len(lines) // 2)  # on short pages the edges must not meet in the body
        edges = {_line_key(l) for l in lines[:e] + lines[len(lines) - e:] if l.strip() and len(l) <= 120}
        counts.update(edges)
    threshold = max(3, (len(pages) + 1) // 2)
    running = {k for k, c in counts.items() if c >= threshold}
    out = []
    for lines in split:
        n = len(lines)
        e = min(edge, n // 2)
        keep = []
        for i, line in enumerate(lines):
            at_edge = i < e or i >= n - e
            if at_edge and line.strip() and (_line_key(line) in running or _PAGE_NUMBER.match(line.strip())):
                continue
            keep.append(line)
        out.append("\n".join(keep).strip())
    return out



def join_pages(source: str, texts: list[str], labels: list[str | None]) -> Document:
    parts, pages, pos = [], [], 0
    for i, (t, label) in enumerate(zip(texts, labels)):
        if parts:
            parts.append("\n\n")
            pos += 2
        pages.append(Page(number=i + 1, label=label, start=pos, end=pos + len(t)))
        parts.append(t)
        pos += len(t)
    return Document(source=source, text="".join(parts), pages=pages)



# a word of three letters or more: what separates text from page furniture, titles from numbers
_LETTER_WORD = re.compile(r"[^\W\d_]{3,}")
_FILE_NAME = re.compile(r"^\S+\.[A-Za-z0-9]{1,5}$")
# Titles that generators and templates write when the author wrote none, as a class: the
# application's window title over the input file ("Microsoft Word - x.doc"), a kind of document
# ("Word Document", "PowerPoint Presentation", VS Code's HTML "Document"), a numbered default
# ("Document1", "Slide 1", "Book1", "Untitled-3") and placeholders ("untitled", "Insert title here").
_APPS = r"(?:microsoft\s+(?:office\s+)?)?(?:word|powerpoint|excel|visio|publisher|onenote|outlook)"
_KINDS = r"(?:document|presentation|workbook|spreadsheet|worksheet|sheet|slide|slideshow|slide\s+show|book|file|drawing|diagram|chart|page|docs?|pdf|template|form)"
_GENERATOR_TITLE = re.compile(rf"""^(?:
    {_APPS}\s*-\s.*                                   # Microsoft Word - report.doc
  | (?:new\s+)?(?:{_APPS}|google|libreoffice|openoffice|writer|impress|calc|pages|keynote|numbers|acrobat|adobe|pdf
               |rich\s+text|plain\s+text|text|opendocument|blank|empty|html|web)?\s*{_KINDS}\s*[-_#]?\s*\d*  # Word Document, Document1
  | (?:untitled|no\s+title|notitle|none|null|nil|unknown|n/?a|tbd|title|default|normal|blank|draft)(?:\W*(?:{_KINDS}|\d+))*  # Untitled-3
  | (?:(?:insert|enter|add|type|your|click\s+here\s+to\s+(?:add|enter))\s+)+(?:your\s+|the\s+|a\s+)?(?:document\s+)?title(?:\s+here)?
  | (?:document|page|presentation|report)\s+title
)$""", re.I | re.X)


def meaningful_title(raw) -> str | None:
    """A metadata title worth showing: words the author gave it, not an accession number, a file
    name or a generator's default ("Word Document", "Microsoft Word - x.doc", "Slide 1")."""
    if not isinstance(raw, str):
        return None
    title = " ".join(clean_text(raw).split())[:200]
    bare = title.strip(" .:;,-_()[]{}<>\"'")
    if _GENERATOR_TITLE.match(bare):
        return None
    title = re.sub(r"\.(?:docx?|pptx?|xlsx?|pdf|indd|tex)$", "", title, flags=re.I)
    if _FILE_NAME.match(title):  # "10811.exe", "zen_of_python.txt": the generator's input file
        return None
    return title if has_words(title) else None


def has_words(text: str) -> bool:
    """True when text holds a word of three letters; "70 4.1." (page furniture) does not."""
    return _LETTER_WORD.search(text) is not None



MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.M)
MAX_HEADING_CHARS = 80


def heading_like(line: str) -> bool:
    """A short line most of whose words (of three letters or more) start with a capital: "CONSOLIDATED BALANCE SHEETS",
    "Note 5 - Acquisitions and Divestitures". Prose lines are longer or mostly lower case."""
    line = line.strip()
    if not 3 <= len(line) <= MAX_HEADING_CHARS:
        return False
    words = _LETTER_WORD.findall(line)
    return bool(words) and sum(w[0].isupper() for w in words) * 2 > len(words)


def page_heading(page_text: str, *, max_lines: int = 3) -> str:
    """What a page says it is about: its first heading-like lines (up to three, joined by " — "),
    e.g. "NETFLIX, INC. — CONSOLIDATED BALANCE SHEETS". Running headers were already removed; a
    page that starts mid-sentence has none. Chunks from the middle of a statement page carry it."""
    lines = []
    for line in page_text.split("\n"):
        if not line.strip():
            continue
        if len(lines) == max_lines or not heading_like(line):
            break
        lines.append(" ".join(line.split()))
    return " — ".join(lines)


def markdown_headings(text: str) -> list[tuple[int, int, str]]:
    """Each Markdown heading covers the text up to the next heading; its text is the heading path
    ("Install > On Linux")."""
    return heading_spans(text, heading_marks(text, MD_HEADING))


def heading_marks(text: str, pattern: re.Pattern) -> list[tuple[int, int, str]]:
    """(start, level, title) of each line `pattern` matches: group 1 is the level marker (`##`,
    `==`, `**`: its length is the level), group 2 the title."""
    return [(m.start(), len(m.group(1)), " ".join(m.group(2).split())) for m in pattern.finditer(text)]


def with_markdown_structure(doc: Document, metadata_title: str | None = None) -> None:
    """A Markdown-shaped document's title (the metadata's when meaningful, else its first heading)
    and heading paths: shared by the Markdown, HTML, DOCX and EPUB readers."""
    first = MD_HEADING.search(doc.text)
    doc.title = meaningful_title(metadata_title) or (meaningful_title(first.group(2)) if first else None)
    doc.headings = markdown_headings(doc.text)


def heading_spans(text: str, marks: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Headings given as (start, level, title) in text order -> (start, end, heading path): each
    covers the text up to the next heading; its path joins the enclosing headings with " > "."""
    out, path = [], []
    for i, (start, level, title) in enumerate(marks):
        path = [p for p in path if p[0] < level] + [(level, title)]
        end = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        out.append((start, end, " > ".join(t for _, t in path)))
    return out



def one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if len(msg) <= 200 else msg[:197] + "..."


def ranges(nums: list[int]) -> str:
    out, start, prev = [], None, None
    for n in nums:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = n
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)
