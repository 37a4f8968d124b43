"""Hostile reference image URLs in dataset rows: internal hosts spelled the way a WHATWG URL
parser reads them are refused when the row is parsed (the engine's dataset rows, no run).

The hostile datasets run end to end are tested in ``tests/test_hostile_input.py``.
"""

from __future__ import annotations

import pytest

from prefect_seedream.engine.dataset import RowDefaults, ValidRow, parse_row

DEFAULTS = RowDefaults(model="doubao-seedream-4.5", size="2K")


# -- internal hosts that a WHATWG URL parser resolves to loopback ----------------------------

#: Each of these is read as 127.0.0.1 / localhost by a WHATWG URL parser (browsers, Node's
#: ``new URL()``, the fetchers of many web services), which percent-decodes the host and
#: ends the authority at a backslash; checked with Node 18: ``new URL(u).hostname``.
WHATWG_LOOPBACK_SPELLINGS = [
    "http://127%2e0%2e0%2e1/a.png",  # -> 127.0.0.1
    "http://%31%32%37.0.0.1/a.png",  # -> 127.0.0.1
    "http://0x7f%2e1/a.png",  # -> 127.0.0.1
    "http://localhost%2e/a.png",  # -> localhost.
    "http://127.0.0.1\\@example.com/a.png",  # -> 127.0.0.1 (urlsplit says example.com)
]


@pytest.mark.parametrize("url", WHATWG_LOOPBACK_SPELLINGS)
def test_internal_host_spellings_of_whatwg_parsers_are_refused(url: str) -> None:
    """(Found as a bug: the host was judged as urlsplit sees it, without percent-decoding
    and with a backslash not ending the authority; fixed in api/addresses.py.)"""
    row = parse_row(1, {"id": "r", "prompt": "a lantern", "image_urls": [url]}, DEFAULTS)
    assert not isinstance(row, ValidRow), f"{url!r} was accepted as a public image URL"
    assert "is not allowed" in row.reason
