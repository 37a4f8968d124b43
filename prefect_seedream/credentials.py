"""The ``SeedreamCredentials`` block: an API key, a base URL and timeouts.

A :class:`~prefect.blocks.abstract.CredentialsBlock`, as Prefect's own integrations' credentials
are: it stores the secret and hands out a configured client with :meth:`get_client`.
"""

from __future__ import annotations

import os

import httpx
from prefect.blocks.abstract import CredentialsBlock
from pydantic import Field, SecretStr

from prefect_seedream.api.client import SeedreamClient, api_identity
from prefect_seedream.api.defaults import (
    API_KEY_ENV,
    BASE_URL_ENV,
    CONNECT_TIMEOUT_SECONDS,
    DEFAULT_BASE_URL,
    POOL_TIMEOUT_SECONDS,
    READ_TIMEOUT_SECONDS,
    SUBMIT_TIMEOUT_SECONDS,
    WRITE_TIMEOUT_SECONDS,
)
from prefect_seedream.api.errors import SeedreamConfigurationError


class SeedreamCredentials(CredentialsBlock):
    """Credentials and connection settings for the Evolink Seedream API.

    Attributes:
        api_key: The Evolink API key (stored as a secret).
        base_url: The API's base URL; point it at the simulator to work offline.
        connect_timeout: Seconds to open a connection.
        read_timeout: Seconds to wait for an answer.
        submit_timeout: Seconds to wait for the answer of a submission (a paid write; Evolink's
            own client allows 120 s).

    Examples:
        Save a block once:
        ```python
        from prefect_seedream import SeedreamCredentials

        SeedreamCredentials(api_key="sk-...").save("evolink", overwrite=True)
        ```

        Load it in a flow (``await ... .aload`` in async code) and get a client:
        ```python
        from prefect_seedream import GenerationRequest, SeedreamCredentials

        credentials = await SeedreamCredentials.aload("evolink")
        async with credentials.get_client() as client:
            task = await client.submit(GenerationRequest(prompt="A red fox"))
            print(task.id, task.status.value)
        ```
    """

    _block_type_name = "Seedream Credentials"
    _block_type_slug = "seedream-credentials"
    _description = "API key and endpoint of the Evolink Seedream image-generation API."
    _documentation_url = "https://docs.evolink.ai"  # type: ignore[assignment]

    api_key: SecretStr = Field(description="The Evolink API key.")
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="Base URL of the API (or of the local simulator).",
    )
    connect_timeout: float = Field(
        default=CONNECT_TIMEOUT_SECONDS, gt=0, description="Seconds to connect."
    )
    read_timeout: float = Field(
        default=READ_TIMEOUT_SECONDS, gt=0, description="Seconds to wait for a response."
    )
    submit_timeout: float = Field(
        default=SUBMIT_TIMEOUT_SECONDS, gt=0,
        description="Seconds to wait for the answer of a submission (a paid write).",
    )

    @classmethod
    def from_env(cls) -> SeedreamCredentials:
        """Build credentials from ``SEEDREAM_API_KEY`` and ``SEEDREAM_BASE_URL``.

        Raises:
            SeedreamConfigurationError: ``SEEDREAM_API_KEY`` is not set.

        Examples:
            ```python
            credentials = SeedreamCredentials.from_env()  # SEEDREAM_API_KEY must be set
            print(credentials.base_url)
            ```
        """
        key = os.environ.get(API_KEY_ENV, "")
        if not key:
            raise SeedreamConfigurationError(
                f"no Seedream credentials: pass a SeedreamCredentials block or set {API_KEY_ENV}"
            )
        return cls(
            api_key=SecretStr(key), base_url=os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        )

    def get_client(self) -> SeedreamClient:
        """Return a new API client configured from this block.

        Examples:
            ```python
            async with SeedreamCredentials.from_env().get_client() as client:  # closed after
                print(await client.get_credits())
            ```
        """
        timeout = httpx.Timeout(
            connect=self.connect_timeout,
            read=self.read_timeout,
            write=WRITE_TIMEOUT_SECONDS,
            pool=POOL_TIMEOUT_SECONDS,
        )
        return SeedreamClient(
            api_key=self.api_key.get_secret_value(), base_url=self.base_url, timeout=timeout,
            submit_timeout=self.submit_timeout,
        )

    @property
    def api_identity(self) -> str:
        """The API's normalised address: the ledger keeps records per API."""
        return api_identity(self.base_url)


def resolve_credentials(credentials: SeedreamCredentials | None) -> SeedreamCredentials:
    """The given block, or one built from the environment when none is given."""
    return credentials if credentials is not None else SeedreamCredentials.from_env()
