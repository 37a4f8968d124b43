"""The contact sheet of an output: ``index.html`` beside ``manifest.jsonl``, for people.

Content teams review the images a run made without opening Prefect: ``index.html`` lists every
row of the manifest, the rows that did not succeed first (with the API's code and message),
then the others, each with its thumbnails (linking to the full images), prompt, model, status
and credits. It opens the same way from a disk (``file://``) and from a bucket served over
HTTP:

* ``index.html``: plain HTML, CSS and a small inline script, no external asset.
* ``sheet/page-<n>.js``: the rows of page ``n`` (:data:`PAGE_ROWS` per page) as a script that
  hands them to the page (``seedreamSheetPage(n, rows)``). Loaded with ``<script src>``, which
  works from ``file://`` where ``fetch()`` of a local file does not. Only the page shown is
  loaded, so a 100,000-row output opens as fast as a 100-row one.
* ``thumbs/<image file name>.jpg``: a small JPEG per image (see
  :mod:`prefect_seedream.engine.thumbnails`), made when the image was stored; the sheet makes only
  the missing ones (images stored by an earlier version). An image no larger than a
  thumbnail is shown as it is. Images are ``loading="lazy"``.

Prompts and messages are user input: the page inserts them as text (``textContent``), never
as HTML, and the few values written into ``index.html`` itself are HTML-escaped.

Knows no Prefect: it needs the output's store and its manifest lines.
"""

from __future__ import annotations

import html
import json
import logging
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from prefect_seedream.engine.manifest import (
    ROW_STATUSES,
    ManifestImage,
    ManifestLine,
    iter_manifest_lines,
)
from prefect_seedream.engine.storage import ImageStore
from prefect_seedream.engine.thumbnails import (
    THUMBNAIL_SIDE,
    THUMBNAILS_DIR,
    needs_thumbnail,
    thumbnail_name,
)

#: The contact sheet's file name, beside ``manifest.jsonl``.
INDEX_NAME = "index.html"
#: Folder of the page scripts, below the output.
PAGES_DIR = "sheet"
#: Rows per page of the contact sheet.
PAGE_ROWS = 100
#: Threads making missing thumbnails (decoding is mostly outside the GIL).
THUMBNAIL_THREADS = 4
_PAGE_FILE = re.compile(r"page-(\d+)\.js$")
_TEMPLATE = "data/contact_sheet.html"
logger = logging.getLogger("prefect_seedream.engine.contact_sheet")


@dataclass
class ContactSheet:
    """What :func:`write_contact_sheet` wrote.

    Attributes:
        uri: Where ``index.html`` is.
        rows: Rows listed (every line of the manifest).
        pages: Page scripts written.
        thumbnails_made: Thumbnails made now (images stored without one).
        counts: Rows by status.
    """

    uri: str
    rows: int = 0
    pages: int = 0
    thumbnails_made: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class SheetTally:
    """What the sheet's header counts: rows by status, images, credits.

    Examples:
        >>> tally = SheetTally()
        >>> tally.add(ManifestLine(row_id="a", row_number=1, prompt="x", model=None,
        ...                        status="succeeded", credits=2.0))
        >>> tally.rows, tally.credits, tally.ordered_counts()
        (1, 2.0, {'succeeded': 1})
    """

    counts: Counter[str] = field(default_factory=Counter)
    images: int = 0
    credits: float = 0.0

    @property
    def rows(self) -> int:
        """Rows counted."""
        return sum(self.counts.values())

    def add(self, line: ManifestLine) -> None:
        """Count one row."""
        self.counts[line.status] += 1
        self.images += len(line.images)
        self.credits = round(self.credits + (line.credits or 0.0), 6)

    def ordered_counts(self) -> dict[str, int]:
        """Rows by status, in the manifest's order of statuses, without the zeros."""
        return {status: self.counts[status] for status in ROW_STATUSES if self.counts[status]}


class ThumbnailIndex:
    """Which images of an output have a thumbnail, making the missing ones.

    Args:
        store: The output.
        threads: Thumbnails made at once.

    Examples:
        >>> from PIL import Image
        >>> store = ImageStore("memory://docs/thumbnail-index")
        >>> with store.open_atomic("fox-1.png") as handle:  # an image bigger than a thumbnail
        ...     Image.new("RGB", (800, 600), "orange").save(handle, format="PNG")
        >>> thumbnails = ThumbnailIndex(store)
        >>> thumbnails.has("fox-1.png")
        False
        >>> thumbnails.ensure(["fox-1.png"])  # made now, as it is not there
        >>> thumbnails.has("fox-1.png"), thumbnails.made
        (True, 1)
    """

    def __init__(self, store: ImageStore, threads: int = THUMBNAIL_THREADS) -> None:
        self.store = store
        self.threads = threads
        prefix = store.path_for(THUMBNAILS_DIR) + "/"
        self.present = {
            f"{THUMBNAILS_DIR}/{path[len(prefix):]}"
            for path in store.list(THUMBNAILS_DIR) if path.startswith(prefix)
        }
        self.made = 0

    def ensure(self, image_relatives: Iterable[str]) -> None:
        """Make the thumbnails these images lack (in threads); those that fail stay missing."""
        missing = sorted({name for name in image_relatives if thumbnail_name(name) not in self.present})
        if not missing:
            return
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for name, made in zip(missing, pool.map(self.store.make_thumbnail, missing)):
                if made:
                    self.present.add(thumbnail_name(name))
                    self.made += 1

    def has(self, image_relative: str) -> bool:
        """True when the image's thumbnail is stored."""
        return thumbnail_name(image_relative) in self.present


def write_contact_sheet(
    store: ImageStore,
    lines: Callable[[], Iterable[ManifestLine]] | None = None,
    *,
    page_rows: int = PAGE_ROWS,
) -> ContactSheet:
    """Write the output's ``index.html``, its page scripts and any missing thumbnail.

    The manifest is read twice, streamed (the rows that did not succeed, then the others),
    so memory stays flat in the number of rows. ``index.html`` is written last, once its
    pages are there; page scripts beyond the new last page are removed.

    Args:
        store: The output.
        lines: Reads the lines to list, each call from the start (default: the manifest).
        page_rows: Rows per page.

    Returns:
        Where the sheet is and what it counted.

    Examples:
        >>> import tempfile
        >>> store = ImageStore(tempfile.mkdtemp())
        >>> line = ManifestLine(row_id="fox", row_number=1, prompt="<b>fox</b>", model="m",
        ...                     status="failed", error={"code": "content_policy_violation",
        ...                     "message": "refused"})
        >>> sheet = write_contact_sheet(store, lambda: [line])
        >>> sheet.rows, sheet.pages, sheet.counts
        (1, 1, {'failed': 1})
        >>> "<b>fox</b>" in store.read_text("index.html")
        False
    """
    read = lines or (lambda: iter_manifest_lines(store))
    thumbnails = ThumbnailIndex(store)
    tally = SheetTally()
    version = uuid.uuid4().hex[:12]
    pages = 0
    for pages, chunk in enumerate(_chunks(_failures_first(read, tally), page_rows), start=1):
        thumbnails.ensure(
            name for line in chunk for name, image in _relatives(store, line)
            if needs_thumbnail(image.width, image.height)
        )
        rows = [sheet_row(store, line, thumbnails) for line in chunk]
        store.write_text(f"{PAGES_DIR}/page-{pages}.js", page_script(pages, rows))
    succeeded = tally.counts["succeeded"]
    meta = sheet_meta(
        rows=tally.rows, pages=pages, page_rows=page_rows, version=version,
        first_succeeded_row=tally.rows - succeeded + 1 if succeeded else None,
    )
    store.write_text(INDEX_NAME, render_index(store.destination, meta, tally))
    _remove_pages_after(store, pages)
    return ContactSheet(
        uri=store.uri_for(store.path_for(INDEX_NAME)), rows=tally.rows, pages=pages,
        thumbnails_made=thumbnails.made, counts=tally.ordered_counts(),
    )


def publish_contact_sheet(store: ImageStore) -> str | None:
    """Write the contact sheet; a failure is logged, never raised (the manifest is what counts).

    Returns:
        The URI of ``index.html``, or None when it could not be written.
    """
    try:
        return write_contact_sheet(store).uri
    except Exception as exc:  # noqa: BLE001 - a run never fails because of its contact sheet
        logger.warning("The contact sheet of %s could not be written: %s", store.destination, exc)
        return None


def sheet_row(store: ImageStore, line: ManifestLine, thumbnails: ThumbnailIndex) -> dict[str, Any]:
    """One row as the page shows it: paths relative to the output, the thumbnail if stored.

    Examples:
        >>> import tempfile
        >>> store = ImageStore(tempfile.mkdtemp())
        >>> line = ManifestLine(row_id="fox", row_number=3, prompt="A fox", model="m",
        ...     status="succeeded", credits=2.0, images=[{"uri": store.path_for("fox-1.png"),
        ...     "width": 1024, "height": 512, "bytes": 10}])
        >>> sheet_row(store, line, ThumbnailIndex(store))["images"]
        [{'href': 'fox-1.png', 'thumb': None, 'width': 1024, 'height': 512, 'thumb_width': 256, 'thumb_height': 128}]
    """
    images = []
    for image in line.images:
        relative = store.relative_of(image.uri)
        scale = min(1.0, THUMBNAIL_SIDE / max(image.width, image.height, 1))
        thumb = None
        if relative is not None and not needs_thumbnail(image.width, image.height):
            thumb = quote(relative)  # no larger than a thumbnail: shown as it is
        elif relative is not None and thumbnails.has(relative):
            thumb = quote(thumbnail_name(relative))
        images.append({
            "href": quote(relative) if relative else None,
            "thumb": thumb,
            "width": image.width,
            "height": image.height,
            "thumb_width": max(1, round(image.width * scale)),
            "thumb_height": max(1, round(image.height * scale)),
        })
    return {
        "row": line.row_number,
        "id": line.row_id,
        "status": line.status,
        "prompt": line.prompt,
        "model": line.model,
        "credits": line.credits,
        "task": line.task_id,
        "error": line.error.model_dump() if line.error is not None else None,
        "images": images,
    }


def page_script(number: int, rows: list[dict[str, Any]]) -> str:
    """The script of one page: it hands its rows to the page (JSON, all ASCII, no ``<``).

    Examples:
        >>> print(page_script(2, [{"prompt": "</script>é"}]), end="")
        seedreamSheetPage(2, [{"prompt": "\\u003c/script\\u003e\\u00e9"}]);
    """
    return f"seedreamSheetPage({number}, {_script_json(rows)});\n"


def sheet_meta(
    *, rows: int, pages: int, page_rows: int, version: str, first_succeeded_row: int | None
) -> dict[str, Any]:
    """What the page's script needs to page through the rows.

    Examples:
        >>> sheet_meta(rows=250, pages=3, page_rows=100, version="v", first_succeeded_row=120)
        ... # doctest: +NORMALIZE_WHITESPACE
        {'rows': 250, 'pages': 3, 'page_rows': 100, 'pages_dir': 'sheet', 'version': 'v',
         'first_succeeded_page': 2}
    """
    first_succeeded_page = (first_succeeded_row - 1) // page_rows + 1 if first_succeeded_row else None
    return {
        "rows": rows, "pages": pages, "page_rows": page_rows, "pages_dir": PAGES_DIR,
        "version": version, "first_succeeded_page": first_succeeded_page,
    }


def render_index(destination: str, meta: dict[str, Any], tally: SheetTally) -> str:
    """``index.html``: the template with the output's name, counts and paging data, escaped.

    Examples:
        >>> page = render_index("out/<script>", sheet_meta(rows=0, pages=0, page_rows=100,
        ...     version="v", first_succeeded_row=None), SheetTally())
        >>> "<script>alert" in page, "out/&lt;script&gt;" in page
        (False, True)
    """
    name = destination.rstrip("/").rsplit("/", 1)[-1] or destination
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    subtitle = (
        f"{html.escape(destination)} \u00b7 written {generated} \u00b7 "
        '<a href="manifest.jsonl">manifest.jsonl</a> lists every row'
    )
    summary = [f"<span><b>{meta['rows']}</b> rows</span>"]
    summary += [
        f"<span class=\"status-{status}\"><b>{count}</b> {status.replace('_', ' ')}</span>"
        for status, count in tally.ordered_counts().items()
    ]
    summary.append(f"<span><b>{tally.images}</b> images</span>")
    summary.append(f"<span><b>{tally.credits:g}</b> credits</span>")
    template = files("prefect_seedream").joinpath(_TEMPLATE).read_text("utf-8")
    return (
        template.replace("__TITLE__", html.escape(f"Contact sheet: {name}"))
        .replace("__SUBTITLE__", subtitle)
        .replace("__COUNTS__", " ".join(summary))
        .replace("__META__", _script_json(meta))
    )


def _script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``<``, ``>`` or ``&``)."""
    text = json.dumps(value, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _failures_first(
    read: Callable[[], Iterable[ManifestLine]], tally: SheetTally
) -> Iterator[ManifestLine]:
    """The lines that did not succeed, then the others (two passes), counting each once."""
    for succeeded in (False, True):
        for line in read():
            if (line.status == "succeeded") is succeeded:
                tally.add(line)
                yield line


def _relatives(store: ImageStore, line: ManifestLine) -> Iterator[tuple[str, ManifestImage]]:
    for image in line.images:
        relative = store.relative_of(image.uri)
        if relative is not None:
            yield relative, image


def _chunks(lines: Iterator[ManifestLine], size: int) -> Iterator[list[ManifestLine]]:
    chunk: list[ManifestLine] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _remove_pages_after(store: ImageStore, pages: int) -> None:
    """Remove the page scripts an earlier, longer sheet left."""
    for path in store.list(PAGES_DIR):
        match = _PAGE_FILE.search(path)
        if match and int(match.group(1)) > pages:
            store.remove(f"{PAGES_DIR}/{match.group(0)}")

