"""Thumbnail files of stored images, for the contact sheet (``index.html``) of an output.

Every stored image gets one small JPEG (longest side :data:`THUMBNAIL_SIDE` pixels) at
``thumbs/<image file name>.jpg`` below the output, made once: when the image is stored, from
the pixels already decoded to verify it (see :meth:`prefect_seedream.engine.storage.ImageStore.save_results`),
or when the contact sheet is written, only for images that have none yet. A thumbnail of a
2048x2048 image is about 8 KB (a JPEG of that image is about 1 MB, a PNG about 5 MB). An image
no larger than a thumbnail (the simulator serves 256-pixel images) is its own thumbnail: no
file is made for it.

Pillow only: no storage, no Prefect.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Pillow is imported where an image is encoded: importing the plugin stays light
    from PIL import Image

#: Longest side of a thumbnail file, in pixels (shown at half that, sharp on 2x screens).
THUMBNAIL_SIDE = 256
#: JPEG quality of the thumbnail files: 0.3 ms to encode, half the size of quality 90.
THUMBNAIL_QUALITY = 75
#: Folder of the thumbnail files, below the output.
THUMBNAILS_DIR = "thumbs"


def thumbnail_name(image_relative: str) -> str:
    """Where the thumbnail of an image (its path relative to the output) is stored.

    Examples:
        >>> thumbnail_name("row-7-1.png")
        'thumbs/row-7-1.png.jpg'
    """
    return f"{THUMBNAILS_DIR}/{image_relative}.jpg"


def needs_thumbnail(width: int, height: int) -> bool:
    """True when an image is larger than a thumbnail (smaller ones are shown as they are).

    Examples:
        >>> needs_thumbnail(2048, 2048), needs_thumbnail(256, 144)
        (True, False)
    """
    return max(width, height) > THUMBNAIL_SIDE


def thumbnail_jpeg(image: Image.Image, side: int = THUMBNAIL_SIDE) -> bytes:
    """Encode a small JPEG of a decoded image: longest side at most ``side``, never enlarged.

    Transparent parts are drawn on white (JPEG has no alpha channel).

    Examples:
        >>> from PIL import Image
        >>> picture = Image.new("RGBA", (1024, 512), (255, 0, 0, 128))
        >>> small = Image.open(io.BytesIO(thumbnail_jpeg(picture)))
        >>> small.format, small.size
        ('JPEG', (256, 128))
        >>> Image.open(io.BytesIO(thumbnail_jpeg(Image.new("L", (40, 30))))).size
        (40, 30)
    """
    from PIL import Image

    width, height = image.size
    scale = min(1.0, side / max(width, height, 1))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # reducing_gap=1.0: a box reduction by the largest whole factor first (2.9 ms for
        # 2048 to 256 pixels, against 5.6 ms with 2.0), then a short bicubic step.
        small = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=1.0)
    out = io.BytesIO()
    _opaque_rgb(small).save(out, format="JPEG", quality=THUMBNAIL_QUALITY)
    return out.getvalue()


def _opaque_rgb(image: Image.Image) -> Image.Image:
    """The image in RGB, with any transparency composited over white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        from PIL import Image

        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")
