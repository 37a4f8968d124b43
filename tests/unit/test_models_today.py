"""The Seedream family as Evolink documents it today (evolink-api.md section 6): the model
table, where each field goes in the body, each local refusal, models the table does not know,
dataset rows, run defaults, prices and the balance check. Pure: no HTTP, no Prefect server."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from prefect_seedream.api.models import (
    MODEL_LIMITS,
    RATIO_SIZES,
    GenerationRequest,
    GenerationTask,
    models_markdown,
)
from prefect_seedream.engine.balance import balance_stop, needed_credits
from prefect_seedream.engine.budget import CreditBudget
from prefect_seedream.engine.dataset import InvalidRow, RowDefaults, ValidRow, parse_row
from prefect_seedream.engine.options import RunOptions

V40, V45 = "doubao-seedream-4.0", "doubao-seedream-4.5"
LITE, PRO, FLASH = "doubao-seedream-5.0-lite", "doubao-seedream-5.0-pro", "doubao-seedream-5.0-flash"
PRO_LAYERS, FLASH_LAYERS = "doubao-seedream-5.0-pro-layerize", "doubao-seedream-5.0-flash-layerize"
REF = "https://cdn.example.com/ref.png"
ROOT = Path(__file__).resolve().parents[2]


def refusal(**fields: object) -> str:
    fields.setdefault("prompt", "A lighthouse at dawn")
    with pytest.raises(ValidationError) as info:
        GenerationRequest(**fields)
    return str(info.value)


def test_the_table_lists_every_model_evolink_serves_today() -> None:
    assert list(MODEL_LIMITS) == [V40, V45, LITE, PRO, FLASH, PRO_LAYERS, FLASH_LAYERS]


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        # The request on Evolink's docs page today, and its siblings per model.
        (V45, {"size": "16:9", "quality": "2K"}),
        (V45, {"size": "auto"}),
        (V40, {"size": "21:9", "quality": "1K", "prompt_priority": "fast"}),
        (V40, {"image_urls": [REF] * 8}),
        (V40, {"image_urls": [REF] * 14, "n": 1}),
        (LITE, {"size": "3:4", "quality": "3K", "output_format": "png", "web_search": True}),
        (PRO, {"size": "1:1", "quality": "1.5K", "output_format": "png", "watermark": True,
               "background": "transparent", "image_urls": [REF]}),
        (FLASH, {"size": "9:16", "quality": "1K", "output_format": "jpeg", "background": "opaque"}),
        (PRO, {"size": "2048x2048", "prompt_priority": "fast"}),
        (PRO_LAYERS, {"prompt": "", "image_urls": [REF], "quality": "auto", "output_format": "png"}),
        (FLASH_LAYERS, {"prompt": "split <bbox>0 0 10 10</bbox>", "image_urls": [REF]}),
        (V45, {"size": "2K"}),  # the seed pages' forms keep working
        (V40, {"size": "1280x720"}),
    ],
)
def test_todays_documented_requests_are_accepted(model: str, fields: dict[str, object]) -> None:
    fields.setdefault("prompt", "A lighthouse at dawn")
    request = GenerationRequest(model=model, **fields)
    assert request.to_api_body()["model"] == model


@pytest.mark.parametrize("size", RATIO_SIZES)
def test_every_ratio_and_auto_are_sizes_of_every_model_that_takes_size(size: str) -> None:
    for limits in MODEL_LIMITS.values():
        if limits.takes_size:
            assert GenerationRequest(model=limits.name, prompt="x", size=size).size == size


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"model": V45, "quality": "1K"}, "quality '1K' is not available for doubao-seedream-4.5"),
        ({"model": LITE, "quality": "1.5K"}, "quality '1.5K'"),
        ({"model": PRO, "quality": "4K"}, "quality '4K'"),
        ({"model": FLASH, "prompt_priority": "fast"}, "prompt_priority 'fast' is not available"),
        ({"model": LITE, "prompt_priority": "standard"}, "prompt_priority is not taken by"),
        ({"model": PRO, "output_format": "jpeg", "background": "transparent", "image_urls": [REF]},
         "background 'transparent' needs output_format png"),
        ({"model": PRO, "background": "transparent"}, "exactly one reference image"),
        ({"model": V45, "output_format": "png"}, "output_format is not taken by doubao-seedream-4.5"),
        ({"model": V45, "watermark": True}, "watermark is not taken"),
        ({"model": LITE, "watermark": False}, "watermark is not taken"),
        ({"model": LITE, "background": "opaque"}, "background is not taken"),
        ({"model": PRO, "web_search": True}, "web_search is not taken"),
        ({"model": PRO, "n": 2}, "n=2 is not available for doubao-seedream-5.0-pro"),
        ({"model": PRO, "image_urls": [REF] * 11}, "more than the 10"),
        ({"model": PRO, "size": "4096x4096"}, "outside [921600, 4624220]"),
        ({"model": PRO_LAYERS, "image_urls": []}, "takes exactly 1"),
        ({"model": PRO_LAYERS, "image_urls": [REF, REF]}, "takes exactly 1"),
        ({"model": PRO_LAYERS, "image_urls": [REF], "size": "1:1"}, "size is not taken"),
        ({"model": FLASH_LAYERS, "image_urls": [REF], "quality": "4K"}, "quality '4K'"),
        ({"model": V45, "size": "16x9"}, "size '16x9'"),
        ({"model": V45, "size": "7:3"}, "size '7:3' is not valid"),
        ({"model": V40, "image_urls": [REF] * 15}, "more than the 14"),
        ({"model": V45, "prompt": "x" * 2001}, "2001 characters"),
        ({"model": PRO, "prompt": "x" * 4001}, "4001 characters"),
        ({"model": V45, "prompt": " "}, "prompt is empty"),
    ],
)
def test_a_value_the_docs_reject_is_refused_naming_the_field(fields: dict[str, object], words: str) -> None:
    assert words in refusal(**fields)


def test_each_field_goes_where_the_models_docs_put_it() -> None:
    lite = GenerationRequest(model=LITE, prompt="x", output_format="png", web_search=True, quality="4K")
    assert lite.to_api_body() == {
        "model": LITE, "prompt": "x", "n": 1, "quality": "4K",
        "model_params": {"output_format": "png", "tools": [{"type": "web_search"}]},
    }
    pro = GenerationRequest(model=PRO, prompt="x", output_format="jpeg", watermark=False, size="16:9")
    assert pro.to_api_body() == {
        "model": PRO, "prompt": "x", "size": "16:9", "output_format": "jpeg", "watermark": False,
    }  # no `n`: the model does not take it
    layers = GenerationRequest(model=PRO_LAYERS, image_urls=[REF], output_format="png")
    assert layers.to_api_body() == {"model": PRO_LAYERS, "image_urls": [REF], "output_format": "png"}
    assert GenerationRequest(prompt="x").to_api_body() == {"model": V45, "prompt": "x", "n": 1}


def test_the_answer_format_follows_the_docs() -> None:
    assert GenerationRequest(model=V45, prompt="x").answer_format == "png"
    assert GenerationRequest(model=LITE, prompt="x").answer_format == "jpeg"
    assert GenerationRequest(model=PRO, prompt="x", output_format="png").answer_format == "png"
    transparent = GenerationRequest(model=PRO, prompt="x", background="transparent", image_urls=[REF])
    assert transparent.answer_format == "png"


def test_a_model_the_table_does_not_know_is_sent_as_is_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = "doubao-seedream-6.0-preview-unit"
    with caplog.at_level(logging.WARNING, logger="prefect_seedream.api"):
        first = GenerationRequest(model=name, prompt="x", size="7:3", quality="8K", output_format="png")
        GenerationRequest(model=name, prompt="y", n=15, image_urls=[REF] * 20)
    warnings = [r for r in caplog.records if name in r.getMessage()]
    assert len(warnings) == 1 and "not checked locally" in warnings[0].getMessage()
    assert first.to_api_body() == {
        "model": name, "prompt": "x", "n": 1, "size": "7:3", "quality": "8K", "output_format": "png",
    }
    assert not first.is_known_model and first.limits is None
    # What holds for every model is still checked: public URLs, n, a name that is a name.
    assert "must use https or http" in refusal(model=name, image_urls=["ftp://x/y.png"])
    assert "[1, 15]" in refusal(model=name, n=16)
    assert "did you mean 'doubao-seedream-4.5'" in refusal(model="Doubao-Seedream-4.5")


def test_quality_is_a_field_with_its_own_type() -> None:
    assert "quality" in refusal(quality="5K")  # not a quality of any model


def test_result_data_urls_are_read_beside_results() -> None:
    task = GenerationTask.model_validate({
        "id": "t", "status": "completed", "results": ["https://cdn/a.jpg"],
        "result_data": [{"result_id": "1", "image_url": "https://cdn/a.jpg"},
                        {"result_id": "2", "image_url": "https://cdn/layer.png"}, "junk", {"x": 1}],
    })
    assert task.image_urls == ["https://cdn/a.jpg", "https://cdn/layer.png"]
    assert GenerationTask.model_validate({"id": "t", "status": "pending", "result_data": None}).image_urls == []


# -- dataset rows and run defaults ------------------------------------------------------------


def row(record: dict[str, object], **defaults: object) -> ValidRow | InvalidRow:
    defaults.setdefault("model", V45)
    defaults.setdefault("size", "2K")
    defaults.setdefault("prompt_priority", "standard")
    return parse_row(1, record, RowDefaults(**defaults))  # type: ignore[arg-type]


def test_a_dataset_row_takes_every_field_of_today() -> None:
    parsed = row({"prompt": "a fox", "model": LITE, "size": "16:9", "quality": "3K",
                  "output_format": "png", "web_search": "yes"})
    assert isinstance(parsed, ValidRow)
    assert parsed.request.to_api_body()["model_params"] == {
        "output_format": "png", "tools": [{"type": "web_search"}]
    }
    parsed = row({"prompt": "a fox", "model": PRO, "watermark": "false", "background": "opaque"})
    assert isinstance(parsed, ValidRow) and parsed.request.watermark is False
    bad = row({"prompt": "a fox", "model": PRO, "watermark": "maybe"})
    assert isinstance(bad, InvalidRow) and "watermark must be true or false" in bad.reason


def test_run_defaults_reach_only_the_models_that_take_them() -> None:
    layers = row({"model": PRO_LAYERS, "image_urls": REF})  # no prompt: optional for layerize
    assert isinstance(layers, ValidRow)
    assert layers.request.size is None and layers.request.prompt_priority is None
    lite = row({"prompt": "x", "model": LITE})
    assert isinstance(lite, ValidRow) and lite.request.prompt_priority is None
    assert lite.request.size == "2K"
    unknown = row({"prompt": "x", "model": "some-new-model"}, quality="2K")
    assert isinstance(unknown, ValidRow)
    assert (unknown.request.size, unknown.request.quality) == (None, "2K")
    missing = row({"model": PRO})
    assert isinstance(missing, InvalidRow) and missing.reason == "prompt is missing"


def test_run_options_check_defaults_as_the_rows_will_get_them() -> None:
    assert RunOptions(model=PRO_LAYERS).row_defaults().for_model(PRO_LAYERS) == {}
    assert RunOptions(model=V45, size="16:9", quality="4K").quality == "4K"
    with pytest.raises(ValidationError, match="quality '1K' is not available"):
        RunOptions(model=V45, quality="1K")
    with pytest.raises(ValidationError, match="output_format is not taken"):
        RunOptions(model=V45, output_format="png")
    assert RunOptions(model="a-model-of-tomorrow").model == "a-model-of-tomorrow"


# -- prices, budget, balance -------------------------------------------------------------------


def test_the_budget_learns_the_price_from_credits_reserved() -> None:
    budget = CreditBudget(limit=10.0)
    request = GenerationRequest(model=V40, prompt="x", n=2)
    assert budget.estimate(request) == pytest.approx(3.0)  # the published 1.5 per image
    submitted = GenerationTask.model_validate(
        {"id": "t", "status": "pending", "usage": {"credits_reserved": 2.8}}
    )
    budget.learn(request, submitted)
    assert budget.estimate(request) == pytest.approx(2.8)
    assert budget.estimate(GenerationRequest(model=V40, prompt="x", n=5)) == pytest.approx(7.0)
    replayed = submitted.model_copy(update={"replayed": True, "usage": submitted.usage.model_copy(
        update={"credits_reserved": 99.0})})
    budget.learn(request, replayed)  # a replayed answer was reserved by another request
    assert budget.estimate(request) == pytest.approx(2.8)
    unknown = GenerationRequest(model="tomorrow-model", prompt="x")
    assert budget.estimate(unknown) == pytest.approx(max(m.credits_per_image for m in MODEL_LIMITS.values()))


def test_the_balance_stop_names_balance_estimate_and_the_ways_on() -> None:
    stop = balance_stop(77.0, 200.0, None)
    assert stop is not None
    sentence = stop.sentence()
    assert "77 credits" in sentence and "200" in sentence
    assert "Top up" in sentence and "--max-credits 77" in sentence
    assert "HTTP" not in sentence  # nothing was sent: no API answer to quote
    assert balance_stop(77.0, 200.0, 50.0) is None  # --max-credits within the balance runs
    assert balance_stop(None, 200.0, None) is None  # an unknown balance never blocks
    assert balance_stop(200.0, 200.0, None) is None
    assert needed_credits(10.0, 50.0) == 10.0


def test_the_readme_models_table_is_the_model_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert models_markdown() in readme
