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

    Attributes:
        model: Default model for rows that name none (a known one, or any name: sent as is).
        size: Default size for rows that name none: auto, a ratio (16:9), a preset, WxH.
        quality: Default resolution of a ratio size (1K, 1.5K, 2K, 3K, 4K: per model).
        output_format: Default image format of the 5.0 models (png or jpeg).
        n: Default most images per prompt.
        prompt_priority: Default prompt priority.
        max_concurrency: Most generations in flight at once in one process (one shard).
        concurrency_limit_name: A Prefect global concurrency limit shared by all runs.
        max_credits: No submission may take the run's credits past this.
        max_wait_seconds: Wall-clock cap of each wait.
        poll_interval: Shortest pause between polls.
        retries: Retries of a row for failures worth retrying.
        retry_delay_seconds: First retry delay (doubles each retry, with jitter).
        resubmit_unknown: Submit again rows whose earlier submission's outcome is unknown.
        wait_for_quota: Pause (instead of stopping) when the key's daily quota is used up and
            the API says when it renews.
        storage_options: fsspec options of the output.
        dataset_storage_options: fsspec options to read the dataset with.
        rows_per_task: Rows per Prefect task run (None: chosen by the dataset's size).
        row_events: Which per-row events to emit.
        reference_store: An fsspec prefix (``s3://bucket/refs``) where local reference images
            are uploaded (once each) for the API to fetch; without it, rows naming local files
            in ``image_urls`` are refused.
        reference_storage_options: fsspec options of ``reference_store``.
        reference_public_url: The public base URL of ``reference_store``, if it is served
            publicly (else presigned URLs are sent).

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

    model: ModelName = DEFAULT_MODEL
    size: str = DEFAULT_SIZE
    quality: Quality | None = None
    output_format: OutputFormat | None = None
    n: Annotated[int, Field(ge=1, le=15)] = DEFAULT_N
    prompt_priority: PromptPriority = DEFAULT_PROMPT_PRIORITY
    max_concurrency: Annotated[int, Field(ge=1, le=MAX_CONCURRENCY_BOUND)] = MAX_CONCURRENCY
    concurrency_limit_name: str | None = None
    max_credits: Annotated[float, Field(gt=0)] | None = None
    max_wait_seconds: Annotated[float, Field(gt=0)] = MAX_WAIT_SECONDS
    poll_interval: Annotated[float, Field(gt=0)] = POLL_INTERVAL_SECONDS
    retries: Annotated[int, Field(ge=0, le=10)] = RETRIES
    retry_delay_seconds: Annotated[float, Field(ge=0)] = RETRY_DELAY_SECONDS
    resubmit_unknown: bool = False
    wait_for_quota: bool = False
    storage_options: dict[str, Any] | None = None
    dataset_storage_options: dict[str, Any] | None = None
    rows_per_task: Annotated[int, Field(ge=1, le=10_000)] | None = None
    row_events: RowEvents = ROW_EVENTS
    reference_store: str | None = None
    reference_storage_options: dict[str, Any] | None = None
    reference_public_url: str | None = None

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
        """The options among a flow run's parameters (the hooks of a stopped run use this)."""
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

    def without_secrets(self) -> RunOptions:
        """These options without the fsspec options (they may hold storage credentials), for
        what is written to the output (``run.json``)."""
        return self.model_copy(update=dict.fromkeys(STORAGE_OPTION_FIELDS))

    def share(self, *, rows: int, total_rows: int) -> RunOptions:
        """The options of a shard of ``rows`` of the ``total_rows``: its share of the budget."""
        if self.max_credits is None:
            return self
        return self.model_copy(update={"max_credits": self.max_credits * rows / total_rows})
