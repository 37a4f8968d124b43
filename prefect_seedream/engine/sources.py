"""Datasets held in memory: a list of dicts, of requests, a pandas or polars DataFrame.

A run reads its dataset more than once (a validation pass, the rows, the manifest's gaps,
the shards on other machines), and a flow run's parameters are stored by the Prefect server
and shown in the UI. So rows held in memory are written once, as JSON Lines, to
``<output>/.seedream/inputs/<sha256 of the rows>.jsonl`` (streamed: rows are never copied
all at once), and the run is given that file's path: its parameters stay a path however
many rows there are, a retry of the flow run from the UI reads the same rows again, and
every shard can read them.

Rows need ids that do not change between runs (ids name the files and key the ledger):
a row's ``id`` when it has one, else ``r-`` and the first 12 hex digits of the sha256 of its
request fields (prompt, model, size, n, prompt_priority, image_urls), with
``-2``, ``-3``, ... for the second, third, ... row with the same content. So running the same
rows again finds them done instead of paying again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prefect_seedream.api.models import GenerationRequest
from prefect_seedream.engine.dataset import ROW_FIELDS, DatasetError
from prefect_seedream.engine.storage import PRIVATE_DIR, ImageStore

INPUTS_DIR = f"{PRIVATE_DIR}/inputs"
#: Rows converted at a time from a DataFrame.
CHUNK_ROWS = 10_000
_CONTENT_FIELDS = tuple(name for name in ROW_FIELDS if name != "id")


def is_in_memory(dataset: Any) -> bool:
    """True for rows held in memory (anything but a path or URL).

    Examples:
        >>> is_in_memory("prompts.csv"), is_in_memory([{"prompt": "a fox"}])
        (False, True)
    """
    return not isinstance(dataset, (str, os.PathLike))


def _plain(value: Any) -> Any:
    """A JSON-ready value from numpy / pandas / polars values; None for a missing one."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())  # numpy scalars and arrays, pandas arrays
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def _record(row: Any) -> dict[str, Any]:
    if isinstance(row, GenerationRequest):
        return row.to_row()
    if isinstance(row, Mapping):
        plain = {str(key): _plain(value) for key, value in row.items()}
        return {key: value for key, value in plain.items() if value is not None}
    raise DatasetError(
        f"a row in memory must be a dict or a GenerationRequest, got {type(row).__name__}"
    )


def iter_records(data: Any) -> Iterator[dict[str, Any]]:
    """The rows of an in-memory dataset as plain dicts, streamed.

    Accepts a list (or any iterable) of dicts or :class:`GenerationRequest`, a pandas
    DataFrame or a polars DataFrame (read in chunks of :data:`CHUNK_ROWS` rows).

    Examples:
        >>> list(iter_records([{"prompt": "a fox", "n": 2, "note": None}]))
        [{'prompt': 'a fox', 'n': 2}]
    """
    module = type(data).__module__.split(".")[0]
    if module == "pandas" and hasattr(data, "iloc"):
        for start in range(0, len(data), CHUNK_ROWS):
            for row in data.iloc[start:start + CHUNK_ROWS].to_dict("records"):
                yield _record(row)
    elif module == "polars" and hasattr(data, "iter_slices"):
        for chunk in data.iter_slices(CHUNK_ROWS):
            for row in chunk.to_dicts():
                yield _record(row)
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        for row in data:
            yield _record(row)
    else:
        raise DatasetError(
            f"dataset must be a path or URL, a list of dicts or GenerationRequest, or a pandas or "
            f"polars DataFrame; got {type(data).__name__}"
        )


def content_id(record: Mapping[str, Any]) -> str:
    """The id of a row without one: a hash of its request fields.

    Examples:
        >>> content_id({"prompt": "a fox"}) == content_id({"prompt": "a fox", "note": "x"})
        True
        >>> content_id({"prompt": "a fox"}).startswith("r-"), len(content_id({"prompt": "a fox"}))
        (True, 14)
    """
    fields = {name: record[name] for name in _CONTENT_FIELDS if record.get(name) is not None}
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
    return "r-" + hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def with_stable_ids(records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Give each row without an ``id`` one derived from its content (see the module docstring).

    Examples:
        >>> rows = list(with_stable_ids([{"prompt": "a"}, {"prompt": "a"}, {"id": "x", "prompt": "b"}]))
        >>> [row["id"] for row in rows][1].endswith("-2"), rows[2]["id"]
        (True, 'x')
    """
    seen: Counter[str] = Counter()
    for record in records:
        if not _missing_id(record.get("id")):
            yield record
            continue
        base = content_id(record)
        seen[base] += 1
        yield {**record, "id": base if seen[base] == 1 else f"{base}-{seen[base]}"}


def _missing_id(value: Any) -> bool:
    """No id: absent, None, blank, or a DataFrame's missing value (NaN).

    Examples:
        >>> [_missing_id(v) for v in (None, "", "  ", float("nan"), "x", 0)]
        [True, True, True, True, False, False]
    """
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def spill_rows(
    data: Any, output: str | ImageStore, storage_options: dict[str, Any] | None = None
) -> str:
    """Write in-memory rows once to ``<output>/.seedream/inputs/<sha256>.jsonl``; returns its URI.

    The same rows always give the same file (written only if missing), so a re-run resumes.
    ``output`` is a path or URL (with its ``storage_options``), or the store a run opened.

    Raises:
        DatasetError: the rows are not a supported kind, or there are none.
    """
    store = output if isinstance(output, ImageStore) else ImageStore(output, storage_options)
    digest = hashlib.sha256()
    rows = 0
    with tempfile.TemporaryFile() as buffer:
        for record in with_stable_ids(iter_records(data)):
            line = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8", "surrogatepass")
            digest.update(line)
            buffer.write(line)
            rows += 1
        if rows == 0:
            raise DatasetError("the dataset in memory has no rows")
        relative = f"{INPUTS_DIR}/{digest.hexdigest()[:32]}.jsonl"
        if not store.exists(store.path_for(relative)):
            buffer.seek(0)
            with store.open_atomic(relative) as target:
                while chunk := buffer.read(1 << 20):
                    target.write(chunk)
    return store.uri_for(store.path_for(relative))
