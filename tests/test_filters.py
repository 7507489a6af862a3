"""The filter grammar and its matching (FORMAT.md §2.10.1), and the dense search inside a filter, in
Python alone; tests/test_c_filters.py holds libkbpack to the same answers."""

from __future__ import annotations

import numpy as np
import pytest

from kbc.format.attributes import AttributeTable
from kbc.format.filters import FilterError, compile_filter, glob_match, parse_condition

GLOBS = [  # (glob, path, matches)
    ("manuals/x200/**", "manuals/x200/a.md", True),
    ("manuals/x200/**", "manuals/x200/deep/er/a.md", True),
    ("manuals/x200/**", "manuals/x2000/a.md", False),
    ("**/*.pdf", "a.pdf", True),
    ("**/*.pdf", "x/y/a.pdf", True),
    ("**/*.pdf", "x/y/a.pdf.md", False),
    ("*.md", "a.md", True),
    ("*.md", "x/a.md", False),  # * stays within a segment
    ("a/**/b.md", "a/b.md", True),  # ** matches zero segments too
    ("a/**/b.md", "a/x/y/b.md", True),
    ("doc?.md", "doc1.md", True),
    ("doc?.md", "doc10.md", False),
    ("doc?.md", "docé.md", True),  # ? is one code point
    ("d*c*x", "dabcabcx", True),
    ("[a].md", "[a].md", True),  # no classes: brackets are literal
    ("[a].md", "a.md", False),
    ("**", "anything/at/all", True),
    ("a*a*a*a*a*a*b", "a" * 3000, False),  # greedy, not exponential
]


@pytest.mark.parametrize("glob,path,expected", GLOBS)
def test_globs(glob, path, expected):
    assert glob_match(glob, path) is expected


def test_a_path_over_4096_bytes_matches_no_glob():
    assert glob_match("**", "a/" * 2048)  # 4,096 bytes
    assert not glob_match("**", "a/" * 2048 + "b")


TABLE = AttributeTable({"product": "string", "tags": "list", "year": "integer", "released": "date"},
                       firsts=[0, 3, 5, 9], sources=[0, 1, 2, 0],
                       values=[["x200", ["en", "hw"], 2020, "2020-05-01"], ["x300", ["de"], 2023, None],
                               [None, [], None, "2024-02-29"], ["x200", None, 2024, "2019-12-31"]],
                       count=12)
PATHS = ["manuals/a.md", "manuals/b.md", "notes.md"]


@pytest.mark.parametrize("where,ids", [
    (["product=x200"], [0, 1, 2, 9, 10, 11]),
    (["product=x200,x300"], [0, 1, 2, 3, 4, 9, 10, 11]),
    (["tags=de"], [3, 4]),
    (["tags=en,de"], [0, 1, 2, 3, 4]),
    (["year>=2023"], [3, 4, 9, 10, 11]),
    (["year<2023", "product=x200"], [0, 1, 2]),
    (["released>2020-01-01"], [0, 1, 2, 5, 6, 7, 8]),
    (["released=2024-02-29"], [5, 6, 7, 8]),
    (["path:manuals/**"], [0, 1, 2, 3, 4, 9, 10, 11]),
    (["path:manuals/**", "year=2023"], [3, 4]),
    ([" year >= 2024 "], [9, 10, 11]),
    (["product=none"], []),
])
def test_conditions_select_runs_of_chunks(where, ids):
    assert compile_filter(where, TABLE, PATHS).ids.tolist() == ids


@pytest.mark.parametrize("cond,message", [
    ("produkt=x200", "unknown attribute 'produkt' in 'produkt=x200'; this bundle has: product, released, tags, year"),
    ("product>x", "product is a string; only = applies"),
    ("tags<=en", "tags is a list; only = applies"),
    ("year>=twenty", "year is an integer; 'twenty' is not one"),
    ("year>=2020,2021", ">= takes one value"),
    ("released<2023-02-29", "released is a date; '2023-02-29' is not a YYYY-MM-DD date"),
    ("product", "is not a condition: expected path:GLOB"),
    ("=x", "no attribute before ="),
    ("product=", "an empty value for product"),
    ("path:", "a path glob must be 1 to 1024 bytes"),
    ("year=9007199254740992", "is not one"),  # 2^53
])
def test_conditions_refused_name_what_is_wrong(cond, message):
    with pytest.raises(FilterError, match=None) as e:
        parse_condition(cond, TABLE)
    assert message in str(e.value)


def test_no_attributes_refuses_every_condition():
    with pytest.raises(FilterError, match="no attributes in this bundle"):
        compile_filter(["path:**"], None, PATHS)
    with pytest.raises(FilterError, match="at most 64"):
        compile_filter(["path:**"] * 65, TABLE, PATHS)


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_dense_search_inside_a_filter_is_exact_over_its_rows_in_blocks(monkeypatch, dtype):
    """Only allowed rows are scored, best first, lower id first on ties; read a block at a time."""
    import kbc.search.dense as dense
    from kbc.format import vectors as vec_enc

    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 24)).astype(np.float32)
    x[7] = x[3]  # a tie
    rows, scales = vec_enc.encode(x, dtype)
    searcher = dense.Searcher(rows, None, {}, scales=scales)
    allowed = np.sort(rng.choice(500, 123, replace=False)).astype(np.int64)
    allowed = np.union1d(allowed, [3, 7])
    q = x[3:4] + 0.0
    whole = searcher.search(q, 10, allowed=allowed)
    monkeypatch.setattr(dense, "ALLOWED_BLOCK", 7)
    blocked = searcher.search(q, 10, allowed=allowed)
    assert np.array_equal(whole[1], blocked[1]) and np.allclose(whole[0], blocked[0])
    exact = np.asarray(vec_enc.dequantise(rows, scales), dtype=np.float32)[allowed] @ q[0]
    order = np.lexsort((allowed, -exact))[:10]
    assert whole[1][0].tolist() == allowed[order].tolist()
    assert whole[1][0][:2].tolist() == [3, 7]  # the tie: lower id first
    assert searcher.search(q, 10, allowed=allowed[:4])[1].shape == (1, 4)  # fewer than k: all of them
