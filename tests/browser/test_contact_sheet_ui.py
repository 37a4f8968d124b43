"""The contact sheet (`index.html`) in headless Chromium: opened from disk (``file://``) and
served from a bucket over HTTP (moto). Thumbnails really render (``naturalWidth > 0``), the
rows that did not succeed come first with their codes, a prompt holding ``<script>`` is shown
as text and never runs, pages turn, and nothing is fetched from anywhere but the output."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Page

from prefect_seedream.engine.contact_sheet import write_contact_sheet
from prefect_seedream.engine.manifest import MANIFEST_NAME, ManifestLine
from prefect_seedream.engine.storage import ImageStore
from tests.browser.prefect_ui import CHROMIUM_PATH

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not Path(CHROMIUM_PATH).exists() and not os.environ.get("CI"),
        reason=f"{CHROMIUM_PATH} missing: run .ci/install-browser.sh (in CI this fails instead)",
    ),
]

HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
ROWS = 230  # three pages: 100, 100, 30


def build_output(store: ImageStore) -> None:
    """A manifest of ROWS rows (every 20th refused, row 7 with a hostile prompt), its images
    (rows with an even number have two), and its contact sheet (whose thumbnails are made now)."""
    lines = []
    for number in range(1, ROWS + 1):
        if number % 20 == 0:
            lines.append(ManifestLine(
                row_id=f"row-{number}", row_number=number, prompt=f"refused {number}", model="m",
                status="failed", error={"code": "content_policy_violation", "message": HOSTILE},
            ))
            continue
        images = [_store_image(store, f"row-{number}-{i}.png", number) for i in range(1, 2 + (number % 2 == 0))]
        prompt = HOSTILE if number == 7 else f"A picture number {number}"
        lines.append(ManifestLine(
            row_id=f"row-{number}", row_number=number, prompt=prompt, model="doubao-seedream-4.5",
            status="succeeded", credits=2.0, images=images,
        ))
    store.write_text(MANIFEST_NAME, "".join(line.model_dump_json() + "\n" for line in lines))
    write_contact_sheet(store)


def _store_image(store: ImageStore, name: str, seed: int) -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (seed * 37 % 256, seed * 91 % 256, 160)).save(buffer, format="PNG")
    store.fs.pipe_file(store.path_for(name), buffer.getvalue())
    return {"uri": store.uri_for(store.path_for(name)), "width": 640, "height": 480, "bytes": len(buffer.getvalue())}


def open_sheet(page: Page, url: str) -> list[str]:
    """Open the sheet; returns every URL the page requested."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url)
    page.wait_for_selector("body[data-rendered='1']")
    return requested


def rendered_thumbnails(page: Page, count: int) -> list[dict[str, Any]]:
    """Scroll the first ``count`` thumbnails into view and wait until each has loaded."""
    images = page.locator("#rows img")
    for index in range(count):
        images.nth(index).scroll_into_view_if_needed()
    page.wait_for_function(
        f"Array.from(document.querySelectorAll('#rows img')).slice(0, {count})"
        ".every(img => img.complete && img.naturalWidth > 0)"
    )
    return page.eval_on_selector_all(
        "#rows img", "imgs => imgs.map(i => ({src: i.currentSrc, width: i.naturalWidth, "
        "href: i.closest('a').href, loading: i.loading}))"
    )


def check_sheet(page: Page, base: str) -> None:
    statuses = page.eval_on_selector_all("#rows > li", "items => items.map(i => i.dataset.status)")
    assert len(statuses) == 100
    assert statuses[:11] == ["failed"] * 11 and set(statuses[11:]) == {"succeeded"}
    first = page.locator("#rows > li").first
    assert "content_policy_violation" in first.inner_text() and HOSTILE in first.inner_text()
    assert page.locator("#rows > li[data-row-id='row-7'] .prompt").inner_text() == HOSTILE
    assert page.evaluate("window.pwned") is None  # shown as text, never run

    thumbs = rendered_thumbnails(page, 8)
    assert all(thumb["loading"] == "lazy" for thumb in thumbs)
    assert all(thumb["src"].startswith(base + "thumbs/") and thumb["width"] == 256 for thumb in thumbs[:8])
    assert thumbs[0]["href"] == base + "row-1-1.png"  # the thumbnail links to the full image

    page.get_by_role("button", name="Next").click()
    page.wait_for_selector("body[data-rendered='2']")
    ids = page.eval_on_selector_all("#rows > li", "items => items.map(i => i.dataset.rowId)")
    assert len(ids) == 100 and ids[0] == "row-94"  # 89 succeeded rows on page 1 (20, 40, 60, 80 failed)
    page.get_by_role("button", name="Last").click()
    page.wait_for_selector("body[data-rendered='3']")
    assert page.locator("#rows > li").count() == 30
    assert "rows 201\u2013230 of 230" in page.locator("#page-label").inner_text()


def test_the_sheet_opened_from_disk(page: Page, tmp_path: Path, browser_artifacts_dir: Path) -> None:
    output = tmp_path / "out"
    build_output(ImageStore(output))
    base = output.resolve().as_uri() + "/"

    requested = open_sheet(page, base + "index.html")

    page.screenshot(path=str(browser_artifacts_dir / "contact-sheet-disk.png"))
    check_sheet(page, base)
    assert all(url.startswith(base) for url in requested), [u for u in requested if not u.startswith(base)]
    page.goto(base + "index.html#page=3")  # a page's address opens that page
    page.reload()
    page.wait_for_selector("body[data-rendered='3']")


def test_the_sheet_served_from_a_bucket(page: Page, s3_endpoint: str) -> None:
    import boto3
    import s3fs

    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": "testing", "secret": "testing"}
    s3fs.S3FileSystem(**options).mkdir("sheets")
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::sheets/*",
    }]}
    boto3.client("s3", endpoint_url=s3_endpoint).put_bucket_policy(Bucket="sheets", Policy=json.dumps(policy))
    build_output(ImageStore("s3://sheets/run", options))
    base = f"{s3_endpoint}/sheets/run/"

    requested = open_sheet(page, base + "index.html")

    check_sheet(page, base)
    assert all(url.startswith(base) for url in requested)
