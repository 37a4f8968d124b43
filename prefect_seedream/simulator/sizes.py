"""Output sizes: the ``size`` ratios and ``quality`` tiers of Evolink's docs, as data.

``size`` is ``auto`` (the default), a ratio (``16:9``), a seed-page preset (``1K``, ``2K``,
``4K``: a square) or ``WIDTHxHEIGHT``. A ratio or ``auto`` takes its pixels from ``quality``
through the model's tier table (the tables of ``model-params.generated.ts`` in Evolink's own
client); ``auto`` lets the model choose the composition, which the simulator renders as
``1:1``. Two families of tables exist: the 4.x/5.0-lite one (1K, 2K, 3K, 4K) and the
5.0 pro/flash one (1K, 1.5K, 2K), whose 1K and 2K differ slightly from the first.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The ratios accepted as ``size`` (besides ``auto``), in the docs' order.
RATIOS: tuple[str, ...] = (
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "9:21",
)  # fmt: skip

#: The seed pages' ``size`` presets: squares.
PRESET_SIZES: Mapping[str, tuple[int, int]] = {
    "1K": (1024, 1024),
    "2K": (2048, 2048),
    "4K": (4096, 4096),
}

TierTable = Mapping[str, Mapping[str, tuple[int, int]]]


def _tier(*sizes: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Sizes listed in the order of :data:`RATIOS`."""
    assert len(sizes) == len(RATIOS)
    return dict(zip(RATIOS, sizes, strict=True))


#: Pixels of each ratio per quality for 4.0, 4.5 and 5.0-lite.
SEEDREAM_4_TIERS: TierTable = {
    "1K": _tier(
        (1024, 1024), (832, 1248), (1248, 832), (864, 1152), (1152, 864), (896, 1120),
        (1120, 896), (720, 1280), (1280, 720), (1512, 648), (648, 1512),
    ),
    "2K": _tier(
        (2048, 2048), (1664, 2496), (2496, 1664), (1728, 2304), (2304, 1728), (1792, 2240),
        (2240, 1792), (1600, 2848), (2848, 1600), (3136, 1344), (1344, 3136),
    ),
    "3K": _tier(
        (3072, 3072), (2496, 3744), (3744, 2496), (2592, 3456), (3456, 2592), (2688, 3360),
        (3360, 2688), (2304, 4096), (4096, 2304), (4704, 2016), (2016, 4704),
    ),
    "4K": _tier(
        (4096, 4096), (3328, 4992), (4992, 3328), (3520, 4704), (4704, 3520), (3584, 4480),
        (4480, 3584), (3040, 5504), (5504, 3040), (6240, 2656), (2656, 6240),
    ),
}  # fmt: skip

#: Pixels of each ratio per quality for the 5.0 pro and flash models (and their layerize).
SEEDREAM_5_TIERS: TierTable = {
    "1K": _tier(
        (1024, 1024), (832, 1248), (1248, 832), (864, 1152), (1152, 864), (896, 1120),
        (1120, 896), (800, 1424), (1424, 800), (1568, 672), (672, 1568),
    ),
    "1.5K": _tier(
        (1536, 1536), (1248, 1872), (1872, 1248), (1344, 1792), (1792, 1344), (1344, 1680),
        (1680, 1344), (1152, 2048), (2048, 1152), (2352, 1008), (1008, 2352),
    ),
    "2K": _tier(
        (2048, 2048), (1664, 2496), (2496, 1664), (1776, 2368), (2368, 1776), (1792, 2240),
        (2240, 1792), (1584, 2816), (2816, 1584), (3136, 1344), (1344, 3136),
    ),
}  # fmt: skip

#: The tier tables by name, as :attr:`ModelRules.tiers` names them.
TIER_TABLES: Mapping[str, TierTable] = {
    "seedream-4": SEEDREAM_4_TIERS,
    "seedream-5": SEEDREAM_5_TIERS,
}


def tier_size(table: str, quality: str, ratio: str) -> tuple[int, int]:
    """The pixels of ``ratio`` (or ``auto``, drawn as ``1:1``) at ``quality``.

    Examples:
        >>> tier_size("seedream-4", "2K", "16:9")
        (2848, 1600)
        >>> tier_size("seedream-5", "1.5K", "auto")
        (1536, 1536)
    """
    return TIER_TABLES[table][quality]["1:1" if ratio == "auto" else ratio]
