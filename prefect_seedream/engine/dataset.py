"""Read prompt datasets (CSV, JSONL, Parquet) as a stream and validate each row.

A dataset has a ``prompt`` column and optional ``id``, ``model``, ``size``, ``quality``,
``n``, ``prompt_priority``, ``image_urls``, ``output_format``, ``watermark``, ``background``
and ``web_search`` columns; other columns (``callback_url`` among them: a run polls its tasks)
are ignored. Flow parameters are the defaults and row values override them; a default is
applied only where the row's model takes that field (a run's ``size`` does not reach a
layerize row); a model the table does not know gets only the run's ``quality`` and
``output_format``, when set (it is otherwise sent as the row says). A
problem with the whole file (unknown format, missing ``prompt`` column, not
UTF-8, empty) raises :class:`DatasetError`; a problem with one row makes that
row an :class:`InvalidRow` with the reason, and the others go on.
"""

from __future__ import annotations

import csv
import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
from pydantic import ValidationError

from prefect_seedream.api.models import GenerationRequest, find_model_limits
from prefect_seedream.engine.references import no_store_message

ROW_FIELDS = (
    "id", "prompt", "model", "size", "quality", "n", "prompt_priority", "image_urls",
    "output_format", "watermark", "background", "web_search",
)
MAX_ROW_ID_CHARS = 128
CSV_FORMATS = {".csv": ",", ".tsv": "\t"}
JSONL_FORMATS = (".jsonl", ".ndjson")
PARQUET_FORMATS = (".parquet", ".pq")


class DatasetError(ValueError):
    """The dataset as a whole cannot be read; nothing was submitted."""


@dataclass(frozen=True)
class RowDefaults:
    """Request parameters that rows may override, and whether local reference images can be
    uploaded (a reference store is configured): without one, a row naming one is invalid."""

    model: str
    size: str | None = None
    n: int = 1
    prompt_priority: str | None = None
    local_references: bool = False
    quality: str | None = None
    output_format: str | None = None

    def for_model(self, model: str) -> dict[str, Any]:
        """The defaults that apply to a row of ``model``: those its model takes.

        Examples:
            >>> defaults = RowDefaults(model="doubao-seedream-4.5", size="2K", prompt_priority="standard")
            >>> defaults.for_model("doubao-seedream-5.0-pro-layerize")
            {}
            >>> defaults.for_model("doubao-seedream-4.0")
            {'size': '2K', 'prompt_priority': 'standard'}
        """
        limits = find_model_limits(model)
        if limits is None:  # only what the run set on purpose (these have no default)
            return {name: getattr(self, name) for name in ("quality", "output_format") if getattr(self, name)}
        return {
            name: getattr(self, name)
            for name in ("size", "prompt_priority", "quality", "output_format")
            if getattr(self, name) is not None and limits.takes(name)
        }


@dataclass(frozen=True)
class ValidRow:
    """A row that became a valid request."""

    number: int
    row_id: str
    request: GenerationRequest


@dataclass(frozen=True)
class InvalidRow:
    """A row that cannot be submitted, with the reason."""

    number: int
    row_id: str
    prompt: str | None
    reason: str
    parameters: dict[str, Any]


DatasetRow = ValidRow | InvalidRow


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def read_records(
    path: str, storage_options: dict[str, Any] | None = None
) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """Stream a dataset's records as ``(row number, mapping)``; a string is a row's error.

    Args:
        path: The dataset's path or fsspec URL.
        storage_options: fsspec options to read it with.

    Raises:
        DatasetError: unknown format, no ``prompt`` column, not UTF-8, or no rows.
    """
    suffix = _suffix(path)
    options = storage_options or {}
    if suffix in CSV_FORMATS:
        records = _csv_records(path, CSV_FORMATS[suffix], options)
    elif suffix in JSONL_FORMATS:
        records = _jsonl_records(path, options)
    elif suffix in PARQUET_FORMATS:
        records = _parquet_records(path, options)
    else:
        raise DatasetError(
            f"dataset {path!r}: unknown format {suffix or '(no extension)'}; "
            "use .csv, .tsv, .jsonl, .ndjson or .parquet"
        )
    count = 0
    try:
        for record in records:
            count += 1
            yield record
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"dataset {path!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
            f"{exc.start} of a read block, after {count} rows)"
        ) from None
    except FileNotFoundError:
        raise DatasetError(f"dataset {path!r} does not exist") from None
    except OSError as exc:  # a folder, no permission, ...
        raise DatasetError(f"dataset {path!r} cannot be read: {exc.strerror or exc}") from None
    if count == 0:
        raise DatasetError(f"dataset {path!r} has no rows")


def _csv_records(
    path: str, delimiter: str, options: dict[str, Any]
) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with fsspec.open(path, "rt", encoding="utf-8", newline="", **options) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = [name.strip().lstrip("\ufeff") for name in (reader.fieldnames or [])]
        if not header:
            return
        if "prompt" not in header:
            raise DatasetError(
                f"dataset {path!r} has no 'prompt' column (columns: {', '.join(header) or 'none'})"
            )
        reader.fieldnames = header
        number = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # one hostile line (a huge field, ...) is one invalid row
                number += 1
                yield number, f"row cannot be read as CSV: {exc}"
                continue
            number += 1
            if None in row:
                yield number, f"row has {len(header) + len(row[None])} fields, header has {len(header)}"
                continue
            yield number, {key: value for key, value in row.items() if value not in (None, "")}


def _jsonl_records(path: str, options: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    with fsspec.open(path, "rt", encoding="utf-8", **options) as handle:
        number = 0
        for line in handle:
            if not line.strip():
                continue
            number += 1
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, f"line is not valid JSON ({exc.msg} at column {exc.colno})"
                continue
            except (RecursionError, ValueError) as exc:  # nesting or number limits
                yield number, f"line cannot be read as JSON ({type(exc).__name__}: {str(exc)[:80]})"
                continue
            if not isinstance(value, dict):
                yield number, f"line is a JSON {type(value).__name__}, not an object"
                continue
            yield number, value


def _parquet_records(path: str, options: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DatasetError(
            "reading Parquet needs pyarrow: pip install 'prefect-seedream[parquet]'"
        ) from None
    with fsspec.open(path, "rb", **options) as handle:
        parquet = pq.ParquetFile(handle)
        if "prompt" not in parquet.schema_arrow.names:
            raise DatasetError(f"dataset {path!r} has no 'prompt' column")
        number = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield number, {key: value for key, value in row.items() if value is not None}


def _has_control_chars(text: str, allow_whitespace: bool) -> bool:
    allowed = {"\n", "\r", "\t"} if allow_whitespace else set()
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in text)


def _text(record: dict[str, Any], field: str) -> str | None:
    value = record.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{field} must be text, got {type(value).__name__}")
    return str(value)


def _int(record: dict[str, Any], field: str, default: int) -> int:
    value = record.get(field)
    if value is None:
        return default
    if isinstance(value, bool):
        raise ValueError(f"{field} must be a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    raise ValueError(f"{field} must be a whole number, got {str(value)[:40]!r}")


def _urls(record: dict[str, Any]) -> tuple[str, ...]:
    value = record.get("image_urls")
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = json.loads(text)
        else:
            return tuple(part for part in text.replace("|", " ").split() if part)
    if not isinstance(value, list) or not all(isinstance(url, str) for url in value):
        raise ValueError("image_urls must be a list of URLs")
    return tuple(value)


def _row_id(number: int, record: dict[str, Any]) -> tuple[str, str | None]:
    """A record's row id and, when its ``id`` is unusable, why (the id is then ``row-<n>``)."""
    fallback_id = f"row-{number}"
    raw_id = record.get("id")
    try:
        row_id = _text(record, "id") or fallback_id
        if raw_id is not None and (
            len(row_id) > MAX_ROW_ID_CHARS or _has_control_chars(row_id, allow_whitespace=False)
        ):
            raise ValueError(
                f"id must be at most {MAX_ROW_ID_CHARS} printable characters "
                f"(got {len(row_id)} characters: {row_id[:40]!r})"
            )
    except ValueError as exc:
        return fallback_id, str(exc)
    return row_id, None


def parse_row(number: int, record: dict[str, Any] | str, defaults: RowDefaults) -> DatasetRow:
    """Turn one record into a valid request or an invalid row with its reason.

    Examples:
        >>> row = parse_row(1, {"prompt": "A red fox", "n": "2"}, RowDefaults(model="doubao-seedream-4.5"))
        >>> row.row_id, row.request.n
        ('row-1', 2)
        >>> bad = parse_row(2, {"prompt": "x", "size": "1K"}, RowDefaults(model="doubao-seedream-4.5"))
        >>> bad.reason.split(":")[0]
        'size'
    """
    if isinstance(record, str):
        return InvalidRow(number, f"row-{number}", None, record, {})
    prompt_value = record.get("prompt")
    prompt = prompt_value if isinstance(prompt_value, str) else None
    parameters: dict[str, Any] = {}
    row_id, id_error = _row_id(number, record)
    if id_error is not None:
        return InvalidRow(number, row_id, prompt, id_error, parameters)
    try:
        model = _text(record, "model") or defaults.model
        if prompt_value is None:
            limits = find_model_limits(model)
            if limits is None or limits.prompt_required:
                raise ValueError("prompt is missing")
            prompt_value = ""
        if not isinstance(prompt_value, str):
            raise ValueError(f"prompt must be text, got {type(prompt_value).__name__}")
        if _has_control_chars(prompt_value, allow_whitespace=True):
            raise ValueError("prompt contains control characters")
        parameters = _parameters(record, model, defaults)
        request = GenerationRequest(prompt=prompt_value, **parameters)
        if request.local_references and not defaults.local_references:
            raise ValueError(no_store_message(request.local_references[0]))
    except ValidationError as exc:
        return InvalidRow(number, row_id, prompt, _validation_reason(exc), parameters)
    except ValueError as exc:
        return InvalidRow(number, row_id, prompt, str(exc), parameters)
    return ValidRow(number, row_id, request)


def _parameters(record: dict[str, Any], model: str, defaults: RowDefaults) -> dict[str, Any]:
    """A row's request fields: its own values, else the run's defaults its model takes."""
    parameters: dict[str, Any] = {"model": model, **defaults.for_model(model)}
    for name in ("size", "quality", "prompt_priority", "output_format", "background"):
        value = _text(record, name)
        if value:
            parameters[name] = value
    parameters["n"] = _int(record, "n", defaults.n)
    parameters["image_urls"] = _urls(record)
    for name in ("watermark", "web_search"):
        flag = _bool(record, name)
        if flag is not None:
            parameters[name] = flag
    return parameters


def _bool(record: dict[str, Any], field: str) -> bool | None:
    value = record.get(field)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"{field} must be true or false, got {str(value)[:40]!r}")


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(item) for item in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        field = location or message.split(" ", 1)[0].strip("'")
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def iter_rows(
    path: str,
    defaults: RowDefaults,
    first: int = 1,
    last: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[DatasetRow]:
    """Stream a dataset as validated rows; duplicate ids make later rows invalid.

    Args:
        path: The dataset's path or fsspec URL.
        defaults: Request parameters that rows may override.
        first: Number of the first row to yield (1-based, as in the manifest's
            ``row_number``). Earlier rows are read for their id only, so that a duplicate
            id is found across the whole file, whichever range is read.
        last: Number of the last row to yield; the file is not read beyond it.
        storage_options: fsspec options to read the dataset with.

    Examples:
        >>> import fsspec
        >>> with fsspec.open("memory://docs/prompts.csv", "w") as handle:
        ...     _ = handle.write("id,prompt,size\\nfox,A red fox,4K\\nfox,A lighthouse,\\n,A barn,\\n")
        >>> for row in iter_rows("memory://docs/prompts.csv", RowDefaults(model="doubao-seedream-4.5", size="2K")):
        ...     print(row.number, row.row_id, row.request.size if isinstance(row, ValidRow) else row.reason)
        1 fox 4K
        2 fox duplicate id 'fox'
        3 row-3 2K
    """
    seen_ids: set[str] = set()
    for number, record in read_records(path, storage_options):
        if last is not None and number > last:
            return
        if number < first:
            seen_ids.add(f"row-{number}" if isinstance(record, str) else _row_id(number, record)[0])
            continue
        row = parse_row(number, record, defaults)
        if row.row_id in seen_ids:
            prompt = row.request.prompt if isinstance(row, ValidRow) else row.prompt
            row = InvalidRow(number, row.row_id, prompt, f"duplicate id {row.row_id!r}", {})
        seen_ids.add(row.row_id)
        yield row
