"""The contact sheet's builder (`index.html`, page scripts, thumbnails), without Prefect."""

from __future__ import annotations

import io
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFilter

from prefect_seedream.engine.contact_sheet import (
    INDEX_NAME,
    PAGES_DIR,
    publish_contact_sheet,
    write_contact_sheet,
)
from prefect_seedream.engine.manifest import MANIFEST_NAME, ManifestLine
from prefect_seedream.engine.storage import ImageStore
from prefect_seedream.engine.thumbnails import THUMBNAIL_SIDE, thumbnail_jpeg, thumbnail_name

HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def page_rows(store: ImageStore, number: int) -> list[dict[str, Any]]:
    """The rows a page script hands to the page."""
    text = store.read_text(f"{PAGES_DIR}/page-{number}.js")
    assert text is not None, f"page {number} is missing"
    match = re.fullmatch(r"seedreamSheetPage\((\d+), (.*)\);\n", text, re.DOTALL)
    assert match and int(match.group(1)) == number
    return json.loads(match.group(2))


def sheet_meta(store: ImageStore) -> dict[str, Any]:
    """The paging data embedded in index.html."""
    page = store.read_text(INDEX_NAME) or ""
    match = re.search(r'<script type="application/json" id="sheet-meta">(.*?)</script>', page, re.DOTALL)
    assert match
    return json.loads(match.group(1))


def save_image(store: ImageStore, name: str, size: tuple[int, int] = (64, 48)) -> dict[str, Any]:
    """A stored image file and its manifest entry (no thumbnail: as an earlier version left it)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (20, 120, 200)).save(buffer, format="PNG")
    Path(store.path_for(name)).write_bytes(buffer.getvalue())
    return {"uri": store.path_for(name), "width": size[0], "height": size[1], "bytes": len(buffer.getvalue())}


def line(number: int, status: str = "succeeded", **fields: Any) -> ManifestLine:
    defaults: dict[str, Any] = {
        "row_id": f"row-{number}", "prompt": f"prompt {number}", "model": "doubao-seedream-4.5",
    }
    if status != "succeeded":
        defaults["error"] = {"code": "content_policy_violation", "message": f"refused {number}"}
    else:
        defaults["credits"] = 2.0
    return ManifestLine(row_number=number, status=status, **{**defaults, **fields})


def write_manifest(store: ImageStore, lines: list[ManifestLine]) -> None:
    store.write_text(MANIFEST_NAME, "".join(item.model_dump_json() + "\n" for item in lines))


def test_prompts_and_messages_are_never_html(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "out<script>")
    write_manifest(store, [
        line(1, prompt=HOSTILE),
        line(2, "failed", error={"code": "<b>code</b>", "message": HOSTILE}, row_id="</script><x>"),
    ])

    write_contact_sheet(store)

    index = store.read_text(INDEX_NAME) or ""
    assert "window.pwned" not in index and "<b>code" not in index
    assert "out&lt;script&gt;" in index  # the output's name, escaped
    assert index.count("<script") == 2  # the meta data and the page's own script, nothing else
    script = store.read_text(f"{PAGES_DIR}/page-1.js") or ""
    assert "<" not in script and ">" not in script  # JSON with every character escaped in ASCII
    rows = page_rows(store, 1)
    assert rows[0]["error"]["message"] == HOSTILE and rows[1]["prompt"] == HOSTILE  # as text
    assert "textContent" in index and "innerHTML" not in index


def test_rows_that_did_not_succeed_come_first_with_their_codes(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "out")
    statuses = ["succeeded", "failed", "succeeded", "outcome_unknown", "skipped", "in_flight", "failed"]
    write_manifest(store, [line(number, status) for number, status in enumerate(statuses, start=1)])

    sheet = write_contact_sheet(store)

    rows = page_rows(store, 1)
    assert [row["row"] for row in rows] == [2, 4, 5, 6, 7, 1, 3]
    assert rows[0]["error"] == {"code": "content_policy_violation", "message": "refused 2"}
    assert sheet.counts == {"succeeded": 2, "failed": 2, "outcome_unknown": 1, "in_flight": 1, "skipped": 1}
    index = store.read_text(INDEX_NAME) or ""
    assert "<b>2</b> failed" in index and "<b>7</b> rows" in index and "<b>4</b> credits" in index


def test_rows_are_paged_and_an_earlier_longer_sheet_leaves_no_page(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "out")
    write_manifest(store, [line(n, "failed" if n % 10 == 0 else "succeeded") for n in range(1, 451)])
    first = write_contact_sheet(store)
    assert (first.rows, first.pages) == (450, 5)
    assert sheet_meta(store)["first_succeeded_page"] == 1

    write_manifest(store, [line(n, "failed" if n > 120 else "succeeded") for n in range(1, 251)])
    second = write_contact_sheet(store)

    assert (second.rows, second.pages) == (250, 3)
    assert [len(page_rows(store, n)) for n in (1, 2, 3)] == [100, 100, 50]
    assert [row["row"] for row in page_rows(store, 2)][29:31] == [250, 1]  # failures end, then the rest
    assert sorted(row["row"] for n in (1, 2, 3) for row in page_rows(store, n)) == list(range(1, 251))
    assert store.read_text(f"{PAGES_DIR}/page-4.js") is None and store.read_text(f"{PAGES_DIR}/page-5.js") is None
    meta = sheet_meta(store)
    assert meta["rows"] == 250 and meta["pages"] == 3 and meta["first_succeeded_page"] == 2
    assert meta["version"] != "" and meta["pages_dir"] == PAGES_DIR


def test_a_run_with_no_images_and_an_output_with_no_manifest(tmp_path: Path) -> None:
    empty = ImageStore(tmp_path / "empty")
    sheet = write_contact_sheet(empty)
    assert (sheet.rows, sheet.pages) == (0, 0)
    assert sheet_meta(empty)["pages"] == 0 and "No rows in the manifest yet" in (empty.read_text(INDEX_NAME) or "")

    store = ImageStore(tmp_path / "out")
    write_manifest(store, [line(1, "failed"), line(2, "skipped")])
    sheet = write_contact_sheet(store)
    assert (sheet.rows, sheet.pages, sheet.thumbnails_made) == (2, 1, 0)
    assert [row["images"] for row in page_rows(store, 1)] == [[], []]
    assert not Path(store.path_for("thumbs")).exists()


def test_missing_thumbnails_are_made_once_and_link_to_the_full_images(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "out")
    images = [save_image(store, "row-1-1.png", (1024, 512)), save_image(store, "row-1-2.png")]
    gone = {"uri": store.path_for("gone-1.png"), "width": 1000, "height": 1000, "bytes": 1}
    elsewhere = {"uri": str(tmp_path / "elsewhere.png"), "width": 10, "height": 10, "bytes": 1}
    write_manifest(store, [line(1, images=images), line(2, images=[gone, elsewhere])])

    first = write_contact_sheet(store)
    thumb = Path(store.path_for(thumbnail_name("row-1-1.png")))
    made_at = thumb.stat().st_mtime_ns
    second = write_contact_sheet(store)

    assert (first.thumbnails_made, second.thumbnails_made) == (1, 0)
    assert thumb.stat().st_mtime_ns == made_at
    with Image.open(thumb) as small:
        assert small.format == "JPEG" and small.size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE // 2)
    by_row = {row["row"]: row for row in page_rows(store, 1)}
    assert by_row[1]["images"][0] == {
        "href": "row-1-1.png", "thumb": "thumbs/row-1-1.png.jpg", "width": 1024, "height": 512,
        "thumb_width": 256, "thumb_height": 128,
    }
    small = by_row[1]["images"][1]  # no larger than a thumbnail: its own thumbnail, no file
    assert (small["thumb"], small["thumb_width"]) == ("row-1-2.png", 64)
    assert not Path(store.path_for(thumbnail_name("row-1-2.png"))).exists()
    assert [(image["href"], image["thumb"]) for image in by_row[2]["images"]] == [("gone-1.png", None), (None, None)]


def test_a_contact_sheet_that_cannot_be_written_never_fails_the_run(tmp_path: Path, caplog: Any) -> None:
    store = ImageStore(tmp_path / "out")
    store.write_text(MANIFEST_NAME, "{not json\n")
    assert publish_contact_sheet(store) is None
    assert "could not be written" in caplog.text


def realistic_image(side: int, seed: int) -> Image.Image:
    """A detailed picture, about as compressible as a generated one (not a flat colour)."""
    rnd = random.Random(seed)
    base = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    picture = Image.blend(base, Image.effect_noise((side, side), 60).convert("RGB"), 0.35)
    picture = picture.filter(ImageFilter.GaussianBlur(1.2))
    draw = ImageDraw.Draw(picture)
    for _ in range(60):
        x, y, r = rnd.randrange(side), rnd.randrange(side), rnd.randrange(side // 100, side // 7)
        draw.ellipse((x, y, x + r, y + r), fill=tuple(rnd.randrange(256) for _ in range(3)))
    return Image.blend(picture, Image.effect_noise((side, side), 25).convert("RGB"), 0.15)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_thumbnails_add_less_than_5_percent_to_realistic_images(fmt: str) -> None:
    picture = realistic_image(2048, seed=7)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        decoded.load()
        small = thumbnail_jpeg(decoded)
    share = len(small) / len(buffer.getvalue())
    assert share < 0.05, f"{len(small)} bytes of thumbnail for {len(buffer.getvalue())} of {fmt}"
    assert Image.open(io.BytesIO(small)).size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE)


def test_storing_an_image_writes_its_thumbnail_and_never_fails_because_of_it(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "out")
    buffer = io.BytesIO()
    Image.new("RGB", (1024, 768), (10, 200, 90)).save(buffer, format="PNG")

    stored = store._keep("https://example.test/a.png", buffer, "row-1-1", False)

    with Image.open(store.path_for(thumbnail_name("row-1-1.png"))) as small:
        assert small.size == (256, 192)
    blocked = ImageStore(tmp_path / "blocked")
    Path(blocked.path_for("thumbs")).write_text("a file where the folder would go")
    kept = blocked._keep("https://example.test/a.png", buffer, "row-1-1", False)
    assert Path(kept.uri).is_file() and (kept.width, kept.height) == (stored.width, stored.height)
