"""Image-to-image from a local file: the API downloads reference images itself, so the local
file is uploaded once (named by its content) to a reference store the API can read, and sent
as a URL.

In production the store is an object-store prefix, read through presigned URLs:
``reference_store="s3://my-bucket/seedream-refs"``. Offline, against the simulator, this
script serves a local folder over HTTP instead and gives its address as
``reference_public_url`` (any web server or CDN in front of a folder or bucket works the same).
Same set-up as ``catalog_sync.py``.
"""

import functools
import http.server
import threading
from pathlib import Path

from PIL import Image
from prefect import flow

from prefect_seedream import GenerationRequest, generate_images


@flow
def winter_version(photo: str, reference_store: str, reference_public_url: str) -> list[str]:
    request = GenerationRequest(prompt="The same street in winter, snowing", image_urls=(photo,))
    result = generate_images(
        request, "output/edits", label="street-winter",
        reference_store=reference_store, reference_public_url=reference_public_url,
    )
    return [image.uri for image in result.images]


def serve_folder(folder: Path) -> str:
    """Serve a folder over HTTP on a free loopback port (in a daemon thread); returns its URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


if __name__ == "__main__":
    photo = Path("output/street.png")
    photo.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (640, 480), (40, 90, 160)).save(photo)  # stands in for your photo
    store = Path("output/refs").resolve()
    store.mkdir(parents=True, exist_ok=True)
    print(winter_version(f"./{photo}", str(store), serve_folder(store)))
