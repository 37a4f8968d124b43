"""The contact sheet of a large output: how fast it opens in Chromium, what thumbnails cost.

Builds a synthetic output of N rows (``manifest.jsonl`` and one image per row, 1024x1024
JPEG of a detailed picture; every ``--failed-every``-th row refused by content policy), writes
its contact sheet with ``prefect_seedream.engine.contact_sheet.write_contact_sheet`` (which makes every
thumbnail, as for an output stored by a version without them), writes it again (thumbnails
present: what the end of a run costs), opens ``index.html`` from disk in headless Chromium
(``/usr/bin/chromium``, see ``.ci/install-browser.sh``) a few times, and prints:

* the time to the first rendered page (navigation to the rows in the page) and until the
  thumbnails in view are decoded;
* the thumbnails' share of the output's size, on that output and on 2048x2048 PNG and JPEG
  images (what Seedream returns at 2K);
* the CPU a thumbnail adds when an image is stored (decoded already to verify it).

The N image files are hard links to ``--distinct`` pictures (sizes count per file, as a user's
``du --apparent-size`` would); every thumbnail is made from its own file.

    .venv/bin/python benchmarks/contact_sheet.py --rows 10000
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prefect_seedream.engine.contact_sheet import write_contact_sheet
from prefect_seedream.engine.manifest import MANIFEST_NAME, ManifestLine
from prefect_seedream.engine.storage import ImageStore, _inspect_image
from prefect_seedream.engine.thumbnails import THUMBNAILS_DIR, thumbnail_jpeg


def detailed_picture(side: int, seed: int) -> Image.Image:
    """A picture about as compressible as a generated one (gradient, grain, shapes)."""
    rnd = random.Random(seed)
    base = Image.linear_gradient("L").rotate(90 * (seed % 4)).resize((side, side)).convert("RGB")
    tint = Image.new("RGB", (side, side), tuple(rnd.randrange(256) for _ in range(3)))
    picture = Image.blend(Image.blend(base, tint, 0.5), Image.effect_noise((side, side), 60).convert("RGB"), 0.35)
    picture = picture.filter(ImageFilter.GaussianBlur(1.2))
    draw = ImageDraw.Draw(picture)
    for _ in range(60):
        x, y, r = rnd.randrange(side), rnd.randrange(side), rnd.randrange(side // 100, side // 7)
        draw.ellipse((x, y, x + r, y + r), fill=tuple(rnd.randrange(256) for _ in range(3)))
    return Image.blend(picture, Image.effect_noise((side, side), 25).convert("RGB"), 0.15)


def encoded(picture: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def build_output(folder: Path, rows: int, failed_every: int, distinct: int) -> None:
    """The manifest and images of a synthetic run (no thumbnails yet)."""
    sources = []
    for seed in range(distinct):
        path = folder / ".sources" / f"source-{seed}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded(detailed_picture(1024, seed), "JPEG"))
        sources.append(path)
    with (folder / MANIFEST_NAME).open("w", encoding="utf-8") as manifest:
        for number in range(1, rows + 1):
            fields: dict[str, object] = {"row_id": f"row-{number}", "row_number": number,
                                         "prompt": f"A detailed picture, take {number}", "model": "doubao-seedream-4.5"}
            if number % failed_every == 0:
                line = ManifestLine(status="failed", error={"code": "content_policy_violation",
                                    "message": "the prompt was refused"}, **fields)  # type: ignore[arg-type]
            else:
                image = folder / f"row-{number}-1.jpg"
                os.link(sources[number % distinct], image)
                line = ManifestLine(status="succeeded", credits=2.0, images=[{  # type: ignore[arg-type, list-item]
                    "uri": str(image), "width": 1024, "height": 1024, "bytes": image.stat().st_size}], **fields)
            manifest.write(line.model_dump_json() + "\n")


def output_bytes(folder: Path) -> tuple[int, int]:
    """(every file's size added up, the thumbnails' part of it), the sources left out."""
    total = thumbs = 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".sources"]
        for name in names:
            size = (Path(root) / name).stat().st_size
            total += size
            if Path(root).name == THUMBNAILS_DIR:
                thumbs += size
    return total, thumbs


def open_in_chromium(index: Path, repeats: int) -> list[tuple[float, float]]:
    """(ms to the first rendered page, ms until the thumbnails in view are decoded), per open."""
    from playwright.sync_api import sync_playwright

    from tests.browser.prefect_ui import launch_browser, new_page

    timings = []
    with sync_playwright() as pw:
        browser = launch_browser(pw)
        for _ in range(repeats):
            page = new_page(browser)
            page.goto(index.as_uri(), wait_until="commit")
            page.wait_for_selector("body[data-rendered='1']")
            rendered = float(page.evaluate("Number(document.body.dataset.renderedMs)"))
            page.wait_for_function(
                "Array.from(document.querySelectorAll('#rows img')).filter(img => "
                "img.getBoundingClientRect().top < innerHeight).every(img => img.complete && img.naturalWidth > 0)"
            )
            thumbs = float(page.evaluate("performance.now()"))
            timings.append((rendered, thumbs))
            page.context.close()
        browser.close()
    return timings


def store_time_cpu(fmt: str, count: int = 5) -> tuple[float, float, float]:
    """(ms of CPU to verify an image as the store does, ms with its thumbnail, thumbnail share)."""
    data = [encoded(detailed_picture(2048, 100 + seed), fmt) for seed in range(count)]
    best = {False: [float("inf")] * count, True: [float("inf")] * count}
    for _ in range(5):  # interleaved, the fastest of 5 of each: other processes add noise
        for index, raw in enumerate(data):
            for sheet in (False, True):
                started = time.process_time()
                _inspect_image("x", io.BytesIO(raw), False, sheet=sheet)
                best[sheet][index] = min(best[sheet][index], time.process_time() - started)
    costs = [statistics.mean(best[sheet]) * 1000 for sheet in (False, True)]
    shares = []
    for raw in data:
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            shares.append(len(thumbnail_jpeg(image)) / len(raw))
    return costs[0], costs[1], statistics.mean(shares)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--failed-every", type=int, default=200, help="every Nth row is refused")
    parser.add_argument("--distinct", type=int, default=40, help="distinct pictures behind the image files")
    parser.add_argument("--repeats", type=int, default=3, help="times index.html is opened")
    parser.add_argument("--output", type=Path, help="keep the output here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seedream-sheet-") as scratch:
        folder = args.output or Path(scratch) / "out"
        folder.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        build_output(folder, args.rows, args.failed_every, args.distinct)
        print(f"output of {args.rows} rows built in {time.monotonic() - started:.1f} s ({folder})")
        store = ImageStore(folder)
        for label in ("thumbnails made", "thumbnails present"):
            started, cpu = time.monotonic(), time.process_time()
            sheet = write_contact_sheet(store)
            print(f"sheet written ({label}: {sheet.thumbnails_made} made): {time.monotonic() - started:.2f} s wall, "
                  f"{time.process_time() - cpu:.2f} s CPU, {sheet.pages} pages, {sheet.counts}")
        total, thumbs = output_bytes(folder)
        print(f"output {total / 1e6:.1f} MB, thumbnails {thumbs / 1e6:.2f} MB: {thumbs / total:.2%} of the output")
        timings = open_in_chromium(folder / "index.html", args.repeats)
        print("Chromium, index.html from disk: first page rendered at "
              + ", ".join(f"{rendered:.0f}" for rendered, _ in timings) + " ms; thumbnails in view decoded at "
              + ", ".join(f"{shown:.0f}" for _, shown in timings) + " ms (after navigation start)")
    for fmt in ("PNG", "JPEG"):
        plain, with_thumbnail, share = store_time_cpu(fmt)
        print(f"2048x2048 {fmt}: verify {plain:.1f} ms CPU, with its thumbnail {with_thumbnail:.1f} ms "
              f"(+{with_thumbnail - plain:.1f} ms); thumbnail = {share:.2%} of the image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
