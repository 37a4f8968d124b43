"""Tests of the simulator's reference image fetches (``image_urls``), over real loopback HTTP.

A tiny ``http.server`` in a thread serves the reference images (and broken ones)."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image

from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator
from tests.sim_http import M45, SUBMIT, client, make_client, sim, wait_terminal, wait_until

__all__ = ["client", "sim"]  # fixtures, shared with the other simulator tests

FETCH = {
    "latency_seconds": 0.1,
    "jitter_seconds": 0.0,
    "image_max_side": 64,
    "fetch_reference_images": True,
}
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 160, 0)


def encoded(colour: tuple[int, int, int], fmt: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    options = {"lossless": True} if fmt == "WEBP" else {}
    Image.new("RGB", size, colour).save(buffer, format=fmt, **options)
    return buffer.getvalue()


class ImageServer:
    """Serves reference images and broken answers; ``/hang.png`` waits for :attr:`release`."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.files: dict[str, tuple[str, bytes]] = {
            "/red.png": ("image/png", encoded(RED, "PNG")),
            "/blue.png": ("image/png", encoded(BLUE, "PNG")),
            "/green.webp": ("image/webp", encoded(GREEN, "WEBP")),
            "/red.jpg": ("image/jpeg", encoded(RED, "JPEG")),
            "/red.bmp": ("image/bmp", encoded(RED, "BMP")),
            "/page.html": ("image/png", b"<html><body>not an image</body></html>"),
        }
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", "/red.png")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path == "/huge.png":  # announces 11 MB, sends a few bytes
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(11 * 1024 * 1024))
                    self.end_headers()
                    self.wfile.write(b"\x89PNG\r\n\x1a\n")
                    return
                if path in ("/slow.png", "/hang.png"):
                    if path == "/slow.png":
                        time.sleep(0.6)
                    else:
                        server.release.wait(timeout=15)
                    path = "/red.png"
                if path not in server.files:
                    self.send_error(404)
                    return
                content_type, data = server.files[path]
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class QuietServer(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # the simulator hangs up on purpose (too large, cancelled)

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


@pytest.fixture(scope="module")
def images() -> Iterator[ImageServer]:
    server = ImageServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[RunningSimulator]:
    with running_simulator(SimulatorConfig(**FETCH, account_credits=10)) as sim:
        yield sim


def submit_ok(client: httpx.Client, urls: list[str], **fields: Any) -> dict[str, Any]:
    request = {"model": M45, "prompt": "a lighthouse at dusk", "image_urls": urls, **fields}
    response = client.post(SUBMIT, json=request)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def result_image(client: httpx.Client, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200
    return Image.open(io.BytesIO(response.content)).convert("RGB")


def left_half_colours(image: Image.Image) -> set[tuple[int, int, int]]:
    width, height = image.size
    return {image.getpixel((x, y)) for x in range(0, width // 2, 3) for y in range(0, height, 3)}


# -- successful fetches -----------------------------------------------------------------------


def test_every_result_shows_the_first_reference(
    sim: RunningSimulator, client: httpx.Client, images: ImageServer
) -> None:
    red = submit_ok(client, [images.url("/red.png"), images.url("/blue.png")], n=2)
    done = wait_terminal(client, red["id"])
    assert done["status"] == "completed" and len(done["results"]) == 2
    contents = []
    for url in done["results"]:
        image = result_image(client, url)
        assert image.size == (64, 64)
        assert left_half_colours(image) == {RED}  # the whole left half is the reference
        assert image.getpixel((48, 32)) != RED or image.getpixel((60, 5)) != RED
        contents.append(client.get(url).content)
    assert contents[0] != contents[1]  # still one distinct image per index

    blue = wait_terminal(client, submit_ok(client, [images.url("/blue.png")], n=2)["id"])
    assert left_half_colours(result_image(client, blue["results"][0])) == {BLUE}
    assert client.get(blue["results"][0]).content != contents[0]  # same prompt, other reference
    plain = wait_terminal(client, submit_ok(client, [])["id"])
    assert left_half_colours(result_image(client, plain["results"][0])) - {RED, BLUE}
    stats = sim.stats()
    assert (stats["reference_fetches"], stats["reference_fetch_failures"]) == (3, 0)
    assert stats["credits_charged"] == 4 + 4 + 2


@pytest.mark.parametrize(
    ("path", "colour"),
    [("/green.webp", GREEN), ("/red.jpg", RED), ("/red.bmp", RED), ("/redirect", RED)],
)
def test_formats_and_redirects(
    client: httpx.Client, images: ImageServer, path: str, colour: tuple[int, int, int]
) -> None:
    done = wait_terminal(client, submit_ok(client, [images.url(path)])["id"])
    assert done["status"] == "completed", done
    pixel = result_image(client, done["results"][0]).getpixel((16, 32))
    assert all(abs(a - b) <= 8 for a, b in zip(pixel, colour))  # JPEG is lossy


def test_a_task_is_processing_until_its_fetches_are_done(
    sim: RunningSimulator, client: httpx.Client, images: ImageServer
) -> None:
    task_id = submit_ok(client, [images.url("/slow.png")])["id"]
    time.sleep(0.3)  # the latency (0.1 s) is over, the fetch (0.6 s) is not
    waiting = client.get(f"/v1/tasks/{task_id}").json()
    assert (waiting["status"], waiting["progress"]) == ("processing", 99)
    assert waiting["usage"]["credits_reserved"] == 2.0 and "credits_used" not in waiting["usage"]
    assert sim.stats()["active_tasks"] == 1
    done = wait_terminal(client, task_id)
    assert done["status"] == "completed"
    assert sim.stats()["active_tasks"] == 0


def test_the_clock_does_not_finish_a_task_whose_fetch_is_pending(
    sim: RunningSimulator, client: httpx.Client, images: ImageServer
) -> None:
    images.release.clear()
    try:
        task_id = submit_ok(client, [images.url("/hang.png")])["id"]
        sim.app_state.advance_time(3600)
        assert client.get(f"/v1/tasks/{task_id}").json()["status"] == "processing"
        assert sim.stats()["credits_balance"] == 8.0  # still reserved
    finally:
        images.release.set()
    assert wait_terminal(client, task_id)["status"] == "completed"
    assert sim.stats()["credits_balance"] == 8.0  # charged for the image it made


# -- failed fetches ---------------------------------------------------------------------------


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/gone.png"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing.png", "HTTP 404"),
        ("/page.html", "not a JPEG, PNG, WEBP, GIF, BMP or TIFF image"),
        ("/huge.png", "larger than 10485760 bytes"),
        (None, "connection failed"),
    ],
)
def test_a_failed_fetch_fails_the_task_and_refunds_it(
    sim: RunningSimulator,
    client: httpx.Client,
    images: ImageServer,
    path: str | None,
    reason: str,
) -> None:
    url = images.url(path) if path is not None else closed_port_url()
    task = submit_ok(client, [images.url("/red.png"), url])
    done = wait_terminal(client, task["id"])
    assert done["status"] == "failed" and "results" not in done
    assert done["error"]["code"] == "image_processing_error"
    assert done["error"]["message"].startswith(f"cannot fetch reference image {url}: ")
    assert reason in done["error"]["message"]
    assert done["usage"]["credits_used"] == 0.0
    stats = sim.stats()
    assert stats["credits_charged"] == 0.0 and stats["credits_balance"] == 10.0
    assert (stats["reference_fetches"], stats["reference_fetch_failures"]) == (2, 1)


def test_the_message_quotes_at_most_100_characters_of_the_url(
    client: httpx.Client, images: ImageServer
) -> None:
    url = images.url("/missing.png?" + "q" * 200)
    message = wait_terminal(client, submit_ok(client, [url])["id"])["error"]["message"]
    assert message == f"cannot fetch reference image {url[:100]}: HTTP 404"


def test_a_fetch_that_outlasts_its_timeout_fails(images: ImageServer) -> None:
    images.release.clear()
    try:
        with running_simulator(SimulatorConfig(**FETCH)) as sim, make_client(sim) as c:
            sim.app_state.references.timeout = 0.3  # 10 s in normal use
            url = images.url("/hang.png")
            done = wait_terminal(c, submit_ok(c, [url])["id"])
            assert done["error"] == {
                "code": "image_processing_error",
                "message": f"cannot fetch reference image {url}: timed out after 0.3 s",
            }
    finally:
        images.release.set()


# -- configuration ----------------------------------------------------------------------------


def test_private_hosts_can_be_refused(images: ImageServer) -> None:
    config = SimulatorConfig(latency_seconds=0.1, allow_private_image_urls=False)
    with running_simulator(config) as sim, make_client(sim) as c:
        for url in (images.url("/red.png"), "http://localhost/a.png", "https://10.1.2.3/a.png"):
            response = c.post(SUBMIT, json={"model": M45, "prompt": "private", "image_urls": [url]})
            assert response.status_code == 400, url
            assert response.json()["error"]["param"] == "image_urls"
        submit_ok(c, ["https://cdn.example.com/a.png"])  # public: accepted (fetching is off)
        stats = sim.stats()
        assert stats["tasks_created"] == 1 and stats["reference_fetches"] == 0


def test_fetching_is_off_by_default(images: ImageServer) -> None:
    with running_simulator(SimulatorConfig(latency_seconds=0.1, image_max_side=64)) as sim:
        with make_client(sim) as c:
            done = wait_terminal(c, submit_ok(c, [images.url("/missing.png")])["id"])
            assert done["status"] == "completed"
            assert RED not in left_half_colours(result_image(c, done["results"][0]))
        assert sim.stats()["reference_fetches"] == 0


def test_shutdown_and_reset_cancel_fetches_in_progress(images: ImageServer) -> None:
    images.release.clear()
    try:
        with running_simulator(SimulatorConfig(**FETCH)) as sim, make_client(sim) as c:
            submit_ok(c, [images.url("/hang.png")])
            wait_until(lambda: sim.app_state.references.in_flight == 1, what="the fetch")
            sim.reset()
            wait_until(lambda: sim.app_state.references.in_flight == 0, what="the cancel")
            assert sim.stats()["reference_fetches"] == 0
            submit_ok(c, [images.url("/hang.png")])
            wait_until(lambda: sim.stats()["reference_fetches"] == 1, what="the second fetch")
            started = time.monotonic()
        assert time.monotonic() - started < 1.5
        assert sim.app_state.references.in_flight == 0
    finally:
        images.release.set()
