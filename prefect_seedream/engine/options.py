"""The options of a dataset run, as one typed model.

The dataset flow's keyword parameters that shape how rows run (request defaults, concurrency,
budget, waits, retries, ...) are gathered once, at the start of a run, into a
:class:`RunOptions`. That one object travels everywhere they matter: into the row runner, to
each shard (as a flow parameter, unchanged but for its share of the budget), and to the hooks
that write the manifest of a stopped run. Each field has the name of its flow parameter, so
``max_credits`` is ``options.max_credits`` from the flow down to
:class:`~prefect_seedream.engine.budget.CreditBudget`.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prefect_seedream.api.defaults import MAX_WAIT_SECONDS, POLL_INTERVAL_SECONDS
from prefect_seedream.api.models import (
    DEFAULT_MODEL,
    GenerationRequest,
    ModelName,
    OutputFormat,
    Quality,
    find_model_limits,
)
from prefect_seedream.engine.dataset import RowDefaults
from prefect_seedream.engine.defaults import (
    DEFAULT_N,
    DEFAULT_PROMPT_PRIORITY,
    DEFAULT_SIZE,
    MAX_CONCURRENCY,
    MAX_CONCURRENCY_BOUND,
    RETRIES,
    RETRY_DELAY_SECONDS,
    ROW_EVENTS,
    PromptPriority,
    RowEvents,
)
from prefect_seedream.engine.generation import GenerationOptions, WaitOptions
from prefect_seedream.engine.references import ReferenceStore
from prefect_seedream.engine.runner import RetryOptions

#: The options that are fsspec options: they may hold credentials, and are never written out.
STORAGE_OPTION_FIELDS = ("storage_options", "dataset_storage_options", "reference_storage_options")


def dataset_storage_options_for(
    dataset: str, output: str, storage_options: dict[str, Any] | None, given: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The fsspec options a dataset is read with: as given, else the output's when both are
    on the same kind of storage (in-memory rows are written into the output).

    Examples:
        >>> s3 = {"key": "k"}
        >>> dataset_storage_options_for("s3://b/rows.jsonl", "s3://b/out", s3, None)
        {'key': 'k'}
        >>> dataset_storage_options_for("rows.csv", "s3://b/out", s3, None) is None
        True
    """
    if given is not None or not storage_options:
        return given
    same_kind = "://" in dataset and dataset.split("://", 1)[0] == output.split("://", 1)[0]
    return storage_options if same_kind else None


class RunOptions(BaseModel):
    """How the rows of a dataset run are generated (the flow's parameters of that name).

    Each field's ``description`` is the one definition of that option: the Attributes below
    are made from them, and so are the command line's ``prefect-seedream run`` flags (see
    :mod:`prefect_seedream.cli`); the flows' parameters of the same name have the same type and
    default (``tests/test_run_options_once.py`` checks it).

    Examples:
        >>> options = RunOptions(model="doubao-seedream-4.0", size="1K", max_credits=30)
        >>> options.row_defaults().size, options.share(rows=25, total_rows=100).max_credits
        ('1K', 7.5)
        >>> RunOptions(size="1K")  # 1K exists on 4.0 only: refused before anything is spent
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for RunOptions
        ...
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelName = Field(
        DEFAULT_MODEL,
        description="Default model for rows that name none: a known model, or any other name, sent "
        "as is (its rules are then not checked locally).",
    )
    size: str = Field(
        DEFAULT_SIZE,
        description="Default size, for the rows whose model takes one: auto, a ratio such as 16:9 "
        "(with quality), a preset (2K) or WxH.",
    )
    quality: Quality | None = Field(
        None,
        description="Default resolution of a ratio size (which values a model takes: see the "
        "README's Models).",
    )
    output_format: OutputFormat | None = Field(
        None, description="Default image format of the 5.0 models (their default: jpeg)."
    )
    n: Annotated[int, Field(ge=1, le=15)] = Field(
        DEFAULT_N, description="Default most images per prompt (1-15)."
    )
    prompt_priority: PromptPriority = Field(
        DEFAULT_PROMPT_PRIORITY, description="Default prompt priority (fast exists on 4.0 only)."
    )
    max_concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY_BOUND)] = Field(
        MAX_CONCURRENCY,
        description="Most generations in flight at once in one process (in each shard).",
    )
    concurrency_limit_name: str | None = Field(
        None,
        description="A Prefect global concurrency limit shared by all runs and workers (it must "
        "exist: prefect gcl create NAME --limit N).",
    )
    max_credits: Annotated[float, Field(gt=0)] | None = Field(
        None,
        description="Budget: no submission may take the run's credits past it (each shard gets "
        "its rows' share of it).",
    )
    max_wait_seconds: Annotated[float, Field(gt=0)] = Field(
        MAX_WAIT_SECONDS,
        description="Wall-clock cap of each wait, in seconds; a task still running after it is "
        "recorded in_flight with its id, for recover.",
    )
    poll_interval: Annotated[float, Field(gt=0)] = Field(
        POLL_INTERVAL_SECONDS, description="Shortest pause between polls, in seconds."
    )
    retries: Annotated[int, Field(ge=0, le=10)] = Field(
        RETRIES,
        description="Retries of a row for failures worth retrying (429, 5xx, service errors).",
    )
    retry_delay_seconds: Annotated[float, Field(ge=0)] = Field(
        RETRY_DELAY_SECONDS,
        description="First retry delay, in seconds (it doubles each retry, with jitter).",
    )
    resubmit_unknown: bool = Field(
        False,
        description="Submit again rows whose earlier submission's outcome is unknown, with the "
        "same Idempotency-Key (the API returns the task it created, if any).",
    )
    wait_for_quota: bool = Field(
        False,
        description="When the key's daily quota is used up and the API says when it renews, "
        "wait until then instead of stopping.",
    )
    storage_options: dict[str, Any] | None = Field(
        None, description="fsspec options of the output (for example endpoint_url)."
    )
    dataset_storage_options: dict[str, Any] | None = Field(
        None,
        description="fsspec options to read the dataset with (default: the output's, when the "
        "dataset is on the same kind of storage; rows in memory are written into the output).",
    )
    rows_per_task: Annotated[int, Field(ge=1, le=10_000)] | None = Field(
        None,
        description="Rows per Prefect task run (default: 1 up to 50 rows, else about 50 task "
        "runs).",
    )
    row_events: RowEvents = Field(
        ROW_EVENTS,
        description="Per-row Prefect events: failures (seedream.generation.failed for each failed "
        "row), all (also .submitted and .completed) or none.",
    )
    reference_store: str | None = Field(
        None,
        description="An fsspec prefix (s3://bucket/refs) where reference images named by local "
        "paths or storage URLs in image_urls are uploaded, once each, and sent as presigned "
        "URLs; without it such rows are refused.",
    )
    reference_storage_options: dict[str, Any] | None = Field(
        None, description="fsspec options of reference_store."
    )
    reference_public_url: str | None = Field(
        None,
        description="The public base URL of reference_store, if it is served publicly (then no "
        "URL is presigned).",
    )

    @model_validator(mode="after")
    def _request_defaults_fit_together(self) -> RunOptions:
        limits = find_model_limits(self.model)
        references = limits.min_reference_images if limits is not None else 0
        chosen = {"quality": self.quality, "output_format": self.output_format}  # set on purpose
        GenerationRequest(
            model=self.model, prompt="parameter check", n=self.n,
            image_urls=("https://example.com/reference.png",) * references,
            **{**self.row_defaults().for_model(self.model), **{k: v for k, v in chosen.items() if v}},
        )
        return self

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> RunOptions:
        """The options among a call's parameters, the others ignored: what the flows and
        ``generate_many`` build from their ``locals()``, the command line from its parsed
        flags, and the hooks of a stopped run from its flow run's parameters.

        Examples:
            >>> RunOptions.from_parameters({"dataset": "rows.csv", "n": 2, "dry_run": True}).n
            2
        """
        return cls.model_validate({name: parameters[name] for name in cls.model_fields if name in parameters})

    def row_defaults(self) -> RowDefaults:
        """The request parameters rows may override."""
        return RowDefaults(
            model=self.model, size=self.size, n=self.n, prompt_priority=self.prompt_priority,
            local_references=self.reference_store is not None, quality=self.quality,
            output_format=self.output_format,
        )

    def references(self) -> ReferenceStore | None:
        """Where local reference images go (one per process: it uploads each file once)."""
        if self.reference_store is None:
            return None
        return ReferenceStore(
            self.reference_store, self.reference_storage_options,
            public_url=self.reference_public_url,
            url_life_seconds=2 * self.max_wait_seconds * (self.retries + 1),
        )

    def generation(self, references: ReferenceStore | None = None) -> GenerationOptions:
        """Wait and resubmission options of each row."""
        return GenerationOptions(
            wait=WaitOptions(self.max_wait_seconds, self.poll_interval),
            resubmit_unknown=self.resubmit_unknown,
            references=references,
        )

    def retry(self) -> RetryOptions:
        """Retries of each row."""
        return RetryOptions(self.retries, self.retry_delay_seconds)

    def for_dataset(self, dataset: str, output: str) -> RunOptions:
        """These options with the fsspec options ``dataset`` is read with (see
        :func:`dataset_storage_options_for`)."""
        return self.model_copy(update={"dataset_storage_options": dataset_storage_options_for(
            dataset, output, self.storage_options, self.dataset_storage_options
        )})

    def with_storage_options_of(self, given: RunOptions) -> RunOptions:
        """These options with the fsspec options of ``given`` (those of a ``run.json``, which
        holds none, with those the run was called with)."""
        return self.model_copy(update={name: getattr(given, name) for name in STORAGE_OPTION_FIELDS})

    def without_secrets(self) -> RunOptions:
        """These options without the fsspec options (they may hold storage credentials), for
        what is written to the output (``run.json``)."""
        return self.model_copy(update=dict.fromkeys(STORAGE_OPTION_FIELDS))

    def share(self, *, rows: int, total_rows: int) -> RunOptions:
        """The options of a shard of ``rows`` of the ``total_rows``: its share of the budget."""
        if self.max_credits is None:
            return self
        return self.model_copy(update={"max_credits": self.max_credits * rows / total_rows})


def _with_attributes(doc: str, fields: Mapping[str, Any]) -> str:
    """A model's docstring with an ``Attributes:`` section made from its fields' descriptions,
    before its ``Examples:``."""
    section = ["Attributes:"]
    for name, field in fields.items():
        section += textwrap.wrap(
            f"{name}: {field.description}", width=92, initial_indent="    ", subsequent_indent="        ",
        )
    text = inspect.cleandoc(doc)
    head, marker, examples = text.partition("\nExamples:\n")
    return "\n".join([head.rstrip(), "", *section, "", f"{marker.strip()}\n{examples}" if marker else ""]).rstrip() + "\n"


RunOptions.__doc__ = _with_attributes(RunOptions.__doc__ or "", RunOptions.model_fields)
