"""Recognise image bytes by their signature (no decoding, no dependency)."""

from __future__ import annotations

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


def sniff_image_type(head: bytes) -> str | None:
    """Return the image type that the first bytes of a file announce, or None.

    Args:
        head: At least the first 12 bytes of the file.

    Examples:
        >>> sniff_image_type(b"\\x89PNG\\r\\n\\x1a\\n" + b"\\0" * 8)
        'png'
        >>> sniff_image_type(b"<html>oops</html>") is None
        True
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    return None
