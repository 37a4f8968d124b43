"""The simulator follows the Seedream family as Evolink documents it today (``evolink-api.md``
section 6): every model's documented example, its refusals, output formats, layerize results,
``result_data``, prices and extra model names. Real loopback HTTP to a running simulator."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image
from pydantic import ValidationError

from prefect_seedream.simulator import RunningSimulator, SimulatorConfig, running_simulator
from prefect_seedream.simulator.images import served_size
from prefect_seedream.simulator.server import build_parser, config_from_args
from tests.evolink_examples import (
    DOCUMENTED_EXAMPLES,
    EXAMPLE_PIXELS,
    JPEG_BY_DEFAULT,
    LAYERIZE_MODELS,
)
from tests.sim_http import FAST, M40, M45, SUBMIT, client, make_client, sim, wait_terminal

__all__ = ["client", "sim"]  # fixtures

LITE = "doubao-seedream-5.0-lite"
PRO = "doubao-seedream-5.0-pro"
FLASH = "doubao-seedream-5.0-flash"
PRO_LAYERIZE = "doubao-seedream-5.0-pro-layerize"
FLASH_LAYERIZE = "doubao-seedream-5.0-flash-layerize"
PREVIEW = "doubao-seedream-5.1-preview"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
MAX_SIDE = 256
ONE_REF = ["https://example.com/cutout.png"]
PRICES = {M40: 1.5, M45: 2.0, LITE: 2.2, PRO: 6.2, FLASH: 1.25, PRO_LAYERIZE: 6.2}
PRICES[FLASH_LAYERIZE] = 1.25


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[RunningSimulator]:
    config = SimulatorConfig(**FAST, image_max_side=MAX_SIDE, extra_models={PREVIEW: PRO})
    with running_simulator(config) as running:
        yield running


def submit(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(SUBMIT, json=body)
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    return payload


def completed(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    done = wait_terminal(client, submit(client, body)["id"])
    assert done["status"] == "completed", done
    return done


def download(client: httpx.Client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200, response.text
    return response.content


# -- every model's documented example -----------------------------------------------------------


@pytest.mark.parametrize("model", sorted(DOCUMENTED_EXAMPLES))
def test_documented_example_is_accepted_and_completed(client: httpx.Client, model: str) -> None:
    task = submit(client, DOCUMENTED_EXAMPLES[model])
    assert (task["model"], task["status"]) == (model, "pending")
    done = wait_terminal(client, task["id"])
    assert done["status"] == "completed"
    assert (
        done["results"] and [item["image_url"] for item in done["result_data"]] == done["results"]
    )
    first = download(client, done["results"][0])
    magic = JPEG_MAGIC if model in JPEG_BY_DEFAULT else PNG_MAGIC
    assert first.startswith(magic)
    with Image.open(io.BytesIO(first)) as image:
        assert image.size == served_size(*EXAMPLE_PIXELS[model], MAX_SIDE)


def test_result_data_beside_results(client: httpx.Client) -> None:
    done = completed(client, {"model": M45, "prompt": "three foxes", "n": 3})
    assert len(done["results"]) == 3
    assert done["result_data"] == [
        {"result_id": f"{done['id']}-{index}", "image_url": url}
        for index, url in enumerate(done["results"])
    ]
    slow = submit(client, {"model": M45, "prompt": "slow [[sim:latency=100]]"})
    pending = client.get(f"/v1/tasks/{slow['id']}").json()
    assert pending["status"] == "pending"
    assert "results" not in pending and "result_data" not in pending


# -- sizes and qualities ------------------------------------------------------------------------

ACCEPTED = [
    (M40, {"size": "1K"}, (1024, 1024)),  # the seed pages' forms
    (M40, {"size": "1280x720"}, (1280, 720)),
    (M40, {"size": "9:16", "quality": "1K"}, (720, 1280)),
    (M40, {"quality": "4K"}, (4096, 4096)),  # size auto
    (M45, {}, (2048, 2048)),
    (M45, {"size": "2560x1440"}, (2560, 1440)),
    (M45, {"size": "auto", "quality": "4K"}, (4096, 4096)),
    (M45, {"size": "21:9", "quality": "4K"}, (6240, 2656)),
    (LITE, {"size": "9:16", "quality": "3K"}, (2304, 4096)),
    (LITE, {"size": "4K"}, (4096, 4096)),
    (LITE, {"model_params": {"output_format": "png"}}, (2048, 2048)),
    (PRO, {}, (1024, 1024)),
    (PRO, {"size": "2K"}, (2048, 2048)),
    (PRO, {"size": "4:3", "quality": "1.5K"}, (1792, 1344)),
    (PRO, {"size": "2150x2150"}, (2150, 2150)),
    (PRO, {"prompt_priority": "fast", "watermark": True}, (1024, 1024)),
    (PRO, {"prompt": "x" * 4000}, (1024, 1024)),
    (PRO, {"image_urls": [f"https://e.com/{i}.png" for i in range(10)]}, (1024, 1024)),
    (FLASH, {"size": "9:21", "quality": "2K"}, (1344, 3136)),
    (FLASH, {"background": "transparent", "image_urls": ONE_REF}, (1024, 1024)),
    (PRO_LAYERIZE, {"image_urls": ONE_REF, "prompt_priority": "fast"}, (1024, 1024)),
    (FLASH_LAYERIZE, {"image_urls": ONE_REF, "quality": "1.5K"}, (1536, 1536)),
    (FLASH_LAYERIZE, {"image_urls": ONE_REF, "prompt": "title text<bbox>179 58 809 197</bbox>"},
     (1024, 1024)),
    (PRO_LAYERIZE, {"image_urls": ONE_REF, "n": 1, "quality": "2K"}, (2048, 2048)),
]  # fmt: skip


@pytest.mark.parametrize(("model", "fields", "pixels"), ACCEPTED)
def test_accepted_bodies_render_their_size(
    client: httpx.Client, model: str, fields: dict[str, Any], pixels: tuple[int, int]
) -> None:
    body = {"model": model, "prompt": "a lighthouse at dusk", **fields}
    if model in LAYERIZE_MODELS and "prompt" not in fields:
        body.pop("prompt")  # optional there
    done = completed(client, body)
    with Image.open(io.BytesIO(download(client, done["results"][0]))) as image:
        assert image.size == served_size(*pixels, MAX_SIDE)


def test_full_size_images_follow_the_quality_table() -> None:
    config = SimulatorConfig(**FAST, image_max_side=None)
    with running_simulator(config) as running, make_client(running) as c:
        done = completed(c, {"model": PRO, "prompt": "wide", "size": "16:9", "quality": "1K"})
        with Image.open(io.BytesIO(download(c, done["results"][0]))) as image:
            assert (image.format, image.size) == ("JPEG", (1424, 800))


# -- refusals -----------------------------------------------------------------------------------

REFUSED = [
    (M40, {"quality": "3K"}, "quality"),
    (M45, {"quality": "1K"}, "quality"),
    (M45, {"size": "21:9", "quality": "1.5K"}, "quality"),
    (LITE, {"quality": "1K"}, "quality"),
    (PRO, {"quality": "4K"}, "quality"),
    (FLASH, {"quality": "3K"}, "quality"),
    (PRO_LAYERIZE, {"image_urls": ONE_REF, "quality": "4K"}, "quality"),
    (FLASH, {"prompt_priority": "fast"}, "prompt_priority"),
    (FLASH_LAYERIZE, {"image_urls": ONE_REF, "prompt_priority": "fast"}, "prompt_priority"),
    (PRO, {"background": "transparent", "output_format": "jpeg", "image_urls": ONE_REF},
     "output_format"),
    (FLASH, {"background": "transparent", "output_format": "jpeg", "image_urls": ONE_REF},
     "output_format"),
    (PRO, {"background": "transparent"}, "image_urls"),
    (PRO, {"background": "blurred"}, "background"),
    (PRO, {"watermark": "yes"}, "watermark"),
    (PRO, {"output_format": "webp"}, "output_format"),
    (M40, {"output_format": "png"}, "output_format"),
    (M45, {"watermark": False}, "watermark"),
    (M45, {"background": "opaque"}, "background"),
    (M40, {"model_params": {"output_format": "png"}}, "model_params"),
    (PRO, {"model_params": {"tools": [{"type": "web_search"}]}}, "model_params"),
    (LITE, {"output_format": "png"}, "output_format"),
    (LITE, {"watermark": True}, "watermark"),
    (LITE, {"model_params": {"output_format": "webp"}}, "model_params.output_format"),
    (LITE, {"model_params": {"tools": [{"type": "image_search"}]}}, "model_params.tools"),
    (LITE, {"model_params": {"seed": 1}}, "model_params.seed"),
    (LITE, {"model_params": "png"}, "model_params"),
    (PRO_LAYERIZE, {"image_urls": ONE_REF, "size": "2K"}, "size"),
    (FLASH_LAYERIZE, {"image_urls": ONE_REF, "size": "16:9"}, "size"),
    (PRO_LAYERIZE, {"image_urls": ONE_REF, "watermark": True}, "watermark"),
    (PRO_LAYERIZE, {}, "image_urls"),
    (FLASH_LAYERIZE, {"image_urls": ONE_REF * 2}, "image_urls"),
    (PRO_LAYERIZE, {"image_urls": ONE_REF, "n": 2}, "n"),
    (PRO, {"image_urls": [f"https://e.com/{i}.png" for i in range(11)]}, "image_urls"),
    (M40, {"image_urls": [f"https://e.com/{i}.png" for i in range(15)]}, "image_urls"),
    (PRO, {"prompt": "x" * 4001}, "prompt"),
    (LITE, {"prompt": "x" * 2001}, "prompt"),
    (PRO, {"size": "4K"}, "size"),  # 16.8M pixels: above pro's 4,624,220
    (PRO, {"size": "2400x2000"}, "size"),
    (LITE, {"size": "1K"}, "size"),
    (LITE, {"size": "1920x1080"}, "size"),
    (PRO, {"size": "7:5"}, "size"),
    (PREVIEW, {"quality": "4K"}, "quality"),  # an extra model keeps its base's rules
]  # fmt: skip


@pytest.mark.parametrize(("model", "fields", "param"), REFUSED)
def test_refusals_are_400_naming_the_field(
    sim: RunningSimulator, client: httpx.Client, model: str, fields: dict[str, Any], param: str
) -> None:
    response = client.post(SUBMIT, json={"model": model, "prompt": "a fox", **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["type"], error["param"]) == (400, "invalid_request_error", param)
    assert param.split(".")[-1] in error["message"]
    assert sim.stats()["tasks_created"] == 0


def test_layerize_prompt_is_optional_but_others_need_one(client: httpx.Client) -> None:
    submit(client, {"model": FLASH_LAYERIZE, "image_urls": ONE_REF})
    response = client.post(SUBMIT, json={"model": PRO})
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"


# -- output formats and layers ------------------------------------------------------------------

FORMATS = [
    (M40, {}, PNG_MAGIC, ".png"),
    (M45, {}, PNG_MAGIC, ".png"),
    (LITE, {}, JPEG_MAGIC, ".jpg"),
    (LITE, {"model_params": {"output_format": "png"}}, PNG_MAGIC, ".png"),
    (PRO, {}, JPEG_MAGIC, ".jpg"),
    (PRO, {"output_format": "png"}, PNG_MAGIC, ".png"),
    (FLASH, {"output_format": "jpeg"}, JPEG_MAGIC, ".jpg"),
    (FLASH, {"output_format": "png", "watermark": True}, PNG_MAGIC, ".png"),
]


@pytest.mark.parametrize(("model", "fields", "magic", "suffix"), FORMATS)
def test_output_format(
    client: httpx.Client, model: str, fields: dict[str, Any], magic: bytes, suffix: str
) -> None:
    done = completed(client, {"model": model, "prompt": "a red kite", **fields})
    url = done["results"][0]
    assert url.endswith(suffix)
    response = client.get(url)
    assert response.status_code == 200 and response.content.startswith(magic)
    assert response.headers["content-type"] == ("image/png" if magic == PNG_MAGIC else "image/jpeg")
    wrong = url[: -len(suffix)] + (".jpg" if suffix == ".png" else ".png")
    assert client.get(wrong).status_code == 404


def alpha_range(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_MAGIC)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "RGBA"
        low, high = image.getchannel("A").getextrema()
    return low, high


@pytest.mark.parametrize(
    ("model", "output_format", "base_magic"),
    [(PRO_LAYERIZE, None, JPEG_MAGIC), (FLASH_LAYERIZE, "png", PNG_MAGIC)],
)
def test_layerize_returns_a_base_and_alpha_layers(
    client: httpx.Client, model: str, output_format: str | None, base_magic: bytes
) -> None:
    body: dict[str, Any] = {"model": model, "image_urls": ONE_REF, "prompt": "split the parrot"}
    if output_format is not None:
        body["output_format"] = output_format
    done = completed(client, body)
    assert len(done["results"]) in (3, 4)  # the base and 2-3 layers
    assert len(done["result_data"]) == len(done["results"])
    base = download(client, done["results"][0])
    assert base.startswith(base_magic)
    for url in done["results"][1:]:
        assert url.endswith(".png")
        low, high = alpha_range(download(client, url))
        assert (low, high) == (0, 255)  # transparent around an opaque element
    again = completed(client, body)  # the same request splits into as many layers
    assert len(again["results"]) == len(done["results"])


def test_transparent_background_answers_png_with_alpha(client: httpx.Client) -> None:
    done = completed(
        client,
        {"model": PRO, "prompt": "a mug", "background": "transparent", "image_urls": ONE_REF},
    )
    assert done["results"][0].endswith(".png")
    assert alpha_range(download(client, done["results"][0]))[0] == 0


# -- prices -------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", sorted(DOCUMENTED_EXAMPLES))
def test_credits_reserved_and_used(client: httpx.Client, model: str) -> None:
    price = PRICES[model]
    body = dict(DOCUMENTED_EXAMPLES[model])
    if model not in LAYERIZE_MODELS:
        body["n"] = 3
    task = submit(client, body)
    done = wait_terminal(client, task["id"])
    if model in LAYERIZE_MODELS:  # billed per output image: reserved for the base + 3 layers
        assert task["usage"]["credits_reserved"] == pytest.approx(4 * price)
        assert done["usage"]["credits_used"] == pytest.approx(len(done["results"]) * price)
    else:
        assert task["usage"]["credits_reserved"] == pytest.approx(3 * price)
        assert done["usage"]["credits_used"] == pytest.approx(3 * price)


def test_lite_costs_the_same_at_every_size(client: httpx.Client) -> None:
    for fields in ({"quality": "2K"}, {"quality": "3K"}, {"size": "4096x4096"}, {"size": "4K"}):
        task = submit(client, {"model": LITE, "prompt": "a hat", **fields})
        assert task["usage"]["credits_reserved"] == pytest.approx(2.2)


def test_published_price_list() -> None:
    config = SimulatorConfig(**FAST, price_list="published", account_credits=10)
    with running_simulator(config) as running, make_client(running) as c:
        task = submit(c, {"model": M45, "prompt": "a fox", "n": 2})
        assert task["usage"]["credits_reserved"] == pytest.approx(5.0)
        assert submit(c, {"model": M40, "prompt": "a fox"})["usage"]["credits_reserved"] == 1.5
        assert running.stats()["credits_balance"] == pytest.approx(10 - 5.0 - 1.5)


# -- a model the client's table does not know ----------------------------------------------------


def test_extra_model_is_served_with_the_rules_of_its_base(client: httpx.Client) -> None:
    body = {"model": PREVIEW, "prompt": "a preview", "size": "16:9", "quality": "1.5K"}
    task = submit(client, body)
    assert task["model"] == PREVIEW
    assert task["usage"]["credits_reserved"] == pytest.approx(PRICES[PRO])
    done = wait_terminal(client, task["id"])
    assert done["model"] == PREVIEW and done["results"][0].endswith(".jpg")
    listed = client.get("/v1/tasks", params={"model": PREVIEW}).json()
    assert [entry["id"] for entry in listed["data"]] == [task["id"]]
    unknown = client.post(SUBMIT, json={**body, "model": "doubao-seedream-9.9"})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "model"


def test_extra_models_must_alias_a_known_model() -> None:
    with pytest.raises(ValidationError, match="is not one of"):
        SimulatorConfig(extra_models={PREVIEW: "doubao-seedream-9.9"})
    with pytest.raises(ValidationError, match="new, non-empty"):
        SimulatorConfig(extra_models={M45: PRO})


def test_command_line_flags() -> None:
    args = build_parser().parse_args(
        ["--extra-model", f"{PREVIEW}={FLASH}", "--price-list", "published"]
    )
    config = config_from_args(args)
    assert (config.extra_models, config.price_list) == ({PREVIEW: FLASH}, "published")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--extra-model", PREVIEW])
