"""Deterministic result images rendered with Pillow.

An image depends only on the prompt, its index, its size and its format: the two gradient
colours come from ``sha256(prompt)`` (all images of one prompt share a palette) and the pattern
drawn on top from ``sha256(index + prompt)``, so the images of a task differ from each other.
A task whose reference images were fetched (``SimulatorConfig.fetch_reference_images``) shows
its first reference, resized to fill the left half (``width // 2`` by ``height`` pixels), in
every result image; the rest is drawn as above. Layers of layerize tasks and transparent
results are PNGs with alpha (:func:`render_alpha_image`).
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from typing import Literal

from PIL import Image, ImageDraw

ImageFormat = Literal["png", "jpeg"]

#: Content type served for each format.
CONTENT_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg"}
#: File extension used in result URLs for each format.
EXTENSIONS: dict[str, str] = {"png": "png", "jpeg": "jpg"}


def served_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The size actually served: the requested size downscaled to ``max_side``.

    Args:
        width: Requested width.
        height: Requested height.
        max_side: Largest side allowed, or ``None`` for the full size.

    Returns:
        ``(width, height)`` keeping the aspect ratio, each at least 1.

    Examples:
        >>> served_size(2048, 2048, 256)
        (256, 256)
        >>> served_size(4096, 1024, 256)
        (256, 64)
        >>> served_size(2560, 1440, None)
        (2560, 1440)
    """
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def render_image(
    prompt: str,
    index: int,
    width: int,
    height: int,
    fmt: ImageFormat,
    reference: bytes | None = None,
) -> bytes:
    """Render one result image.

    Args:
        prompt: The task's prompt.
        index: Position of the image in the task's ``results``.
        width: Width in pixels.
        height: Height in pixels.
        fmt: ``"png"`` or ``"jpeg"``.
        reference: An encoded reference image, pasted (resized) over the left half.

    Returns:
        The encoded image.

    Examples:
        >>> data = render_image("a red fox", 0, 64, 32, "png")
        >>> data[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        True
        >>> data == render_image("a red fox", 0, 64, 32, "png")
        True
        >>> blue = io.BytesIO()
        >>> Image.new("RGB", (8, 8), (0, 0, 255)).save(blue, format="PNG")
        >>> pasted = render_image("a red fox", 0, 64, 32, "png", reference=blue.getvalue())
        >>> Image.open(io.BytesIO(pasted)).getpixel((10, 20))
        (0, 0, 255)
    """
    palette = hashlib.sha256(prompt.encode("utf-8")).digest()
    pattern = hashlib.sha256(f"{index}:{prompt}".encode()).digest()
    first = (palette[0], palette[1], palette[2])
    second = (palette[3], palette[4], palette[5])
    accent = (pattern[0], pattern[1], pattern[2])
    outline_width = max(1, min(width, height) // 40)

    mask = Image.linear_gradient("L").rotate(90 * (palette[6] % 4)).resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), first),
        Image.new("RGB", (width, height), second),
        mask,
    )
    draw = ImageDraw.Draw(image)
    shapes = 2 + pattern[3] % 5
    for shape in range(shapes):
        x0 = pattern[4 + shape * 4] / 255 * width
        y0 = pattern[5 + shape * 4] / 255 * height
        w = (0.1 + pattern[6 + shape * 4] / 255 * 0.4) * width
        h = (0.1 + pattern[7 + shape * 4] / 255 * 0.4) * height
        box = (x0 - w / 2, y0 - h / 2, x0 + w / 2, y0 + h / 2)
        if (pattern[3] >> shape) & 1:
            draw.ellipse(box, fill=accent)
        else:
            draw.rectangle(box, outline=accent, width=outline_width)
    if reference is not None and width >= 2:
        with Image.open(io.BytesIO(reference)) as source:
            pasted = source.convert("RGB").resize((width // 2, height))
        image.paste(pasted, (0, 0))

    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def render_alpha_image(prompt: str, index: int, width: int, height: int) -> bytes:
    """Render one PNG with alpha: a layer of a layerize task, or a transparent result.

    The canvas is fully transparent except one opaque shape (and its half-transparent
    shadow), placed and coloured from ``sha256(index + prompt)``, so the layers of a task
    differ from each other.

    Examples:
        >>> data = render_alpha_image("a poster", 1, 64, 48)
        >>> with Image.open(io.BytesIO(data)) as layer:
        ...     layer.mode, layer.size, layer.getpixel((0, 0))[3]
        ('RGBA', (64, 48), 0)
    """
    pattern = hashlib.sha256(f"layer:{index}:{prompt}".encode()).digest()
    colour = (pattern[0], pattern[1], pattern[2])
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    w = (0.25 + pattern[3] / 255 * 0.35) * width
    h = (0.25 + pattern[4] / 255 * 0.35) * height
    x0 = 0.1 * width + pattern[5] / 255 * (0.9 * width - w)
    y0 = 0.1 * height + pattern[6] / 255 * (0.9 * height - h)
    shadow = max(1, min(width, height) // 50)
    draw.rectangle((x0 + shadow, y0 + shadow, x0 + w + shadow, y0 + h + shadow), fill=(*colour, 96))
    if pattern[7] % 2:
        draw.ellipse((x0, y0, x0 + w, y0 + h), fill=(*colour, 255))
    else:
        draw.rectangle((x0, y0, x0 + w, y0 + h), fill=(*colour, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class ImageCache:
    """A small LRU cache of rendered images, bounded in bytes.

    Args:
        max_bytes: Total size kept.
        max_item_bytes: Larger images are never cached.

    Examples:
        >>> cache = ImageCache(max_bytes=100)
        >>> cache.put(("p", 0), b"x" * 60)
        >>> cache.put(("p", 1), b"y" * 60)
        >>> cache.get(("p", 0)) is None, cache.get(("p", 1)) == b"y" * 60
        (True, True)
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, max_item_bytes: int = 4 * 1024 * 1024):
        self._items: OrderedDict[object, bytes] = OrderedDict()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._max_item_bytes = max_item_bytes

    def get(self, key: object) -> bytes | None:
        """The cached bytes for ``key``, or ``None``."""
        data = self._items.get(key)
        if data is not None:
            self._items.move_to_end(key)
        return data

    def put(self, key: object, data: bytes) -> None:
        """Cache ``data`` unless it is too large, evicting the least recently used."""
        if len(data) > self._max_item_bytes or len(data) > self._max_bytes or key in self._items:
            return
        self._items[key] = data
        self._bytes += len(data)
        while self._bytes > self._max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= len(evicted)

    def clear(self) -> None:
        """Drop every cached image."""
        self._items.clear()
        self._bytes = 0
