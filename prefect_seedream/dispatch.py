"""Tasks and flows that run from sync code as well as from async code.

The plugin's tasks and flows are async (they wait on the network). Prefect's own answer for
libraries is ``async_dispatch`` (``prefect._internal.compatibility.async_dispatch``): call
``x(...)`` and get the result in sync code, a coroutine to await in async code. Applied to a
task or flow object it returns a plain function, which loses what users of a Prefect task
expect (``.submit``, ``.map``, ``.with_options``, ``.fn``, deployments). So the plugin keeps
its Task and Flow objects and gives them the same dispatch, with Prefect's own rule
(``is_in_async_context``): :class:`DualTask` and :class:`DualFlow` are a
:class:`~prefect.tasks.Task` and a :class:`~prefect.flows.Flow` whose call

* returns the awaitable (``await x(...)``) inside an async flow or task, or wherever an
  event loop runs this thread's code outside any run (an async script);
* runs it to its end and returns the result (``x(...)``) inside a sync flow or task, or in
  plain sync code; in a thread with no event loop it runs on a loop of its own
  (``asyncio.run``), else on Prefect's sync-runner thread.

``_sync=True`` / ``_sync=False`` forces either, as with ``async_dispatch``; ``x.aio(...)`` is
always the awaitable.

Called outside any run with no ``PREFECT_API_URL``, a task or flow first starts the plugin's
temporary server (:func:`prefect_seedream.embedded_server.ensure_temporary_server`), where
Prefect would start its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from prefect._internal.compatibility.async_dispatch import is_in_async_context
from prefect.flows import Flow
from prefect.tasks import Task
from prefect.utilities.asyncutils import run_coro_as_sync

from prefect_seedream.embedded_server import ensure_temporary_server, needs_temporary_server

T = TypeVar("T")


def run_sync(awaitable: Awaitable[T]) -> T:
    """Run an awaitable to its end from sync code, in this thread when no loop runs here."""
    async def _await() -> T:
        return await awaitable

    if _loop_runs_here():
        return run_coro_as_sync(_await())  # a loop runs this thread (sync code under an async caller)
    # Run outside any ``except`` block: an exception being handled would stay the thread's
    # current one while the body runs, and Prefect attaches it to every error it logs there.
    return asyncio.run(_await())


def _loop_runs_here() -> bool:
    """True when an event loop runs this thread (probed without leaving an exception behind).

    Examples:
        >>> _loop_runs_here()
        False
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _dispatch(awaitable: Coroutine[Any, Any, T], sync: bool | None) -> T | Coroutine[Any, Any, T]:
    run_here = (not is_in_async_context()) if sync is None else sync
    return run_sync(awaitable) if run_here else awaitable


class DualTask(Task):  # type: ignore[type-arg]
    """An async Prefect task that can also be called from sync code (see the module docstring;
    the examples of :func:`~prefect_seedream.tasks.generate_images` and
    :func:`~prefect_seedream.tasks.generate_many` call one from a sync and an async flow)."""

    def __call__(self, *args: Any, _sync: bool | None = None, **kwargs: Any) -> Any:
        ensure_temporary_server()  # called outside any flow with no PREFECT_API_URL
        return _dispatch(super().__call__(*args, **kwargs), _sync)

    def aio(self, *args: Any, **kwargs: Any) -> Any:
        """The awaitable call, whatever the context."""
        ensure_temporary_server()
        return super().__call__(*args, **kwargs)

    def with_options(self, *args: Any, **kwargs: Any) -> DualTask:
        """:meth:`prefect.tasks.Task.with_options`, keeping the sync/async dispatch."""
        copy = super().with_options(*args, **kwargs)
        copy.__class__ = type(self)
        return copy  # type: ignore[return-value]


class DualFlow(Flow):  # type: ignore[type-arg]
    """An async Prefect flow that can also be called from sync code (see the module docstring).

    Args:
        fn: The flow's async function.
        prepare: Awaited with the call's parameters before the flow run is created, returning
            the parameters to run with (the dataset flow writes in-memory rows to a file here,
            so that the flow run's parameters stay small).
        **options: The options of :func:`prefect.flow`.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        prepare: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(fn=fn, **options)
        self.prepare = prepare

    def __call__(
        self, *args: Any, return_state: bool = False, wait_for: Any = None,
        _sync: bool | None = None, **kwargs: Any,
    ) -> Any:
        return _dispatch(self._call(args, kwargs, return_state, wait_for), _sync)

    def aio(self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs: Any) -> Any:
        """The awaitable call, whatever the context."""
        return self._call(args, kwargs, return_state, wait_for)

    async def _call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], return_state: bool, wait_for: Any
    ) -> Any:
        from prefect.utilities.callables import get_call_parameters

        if needs_temporary_server():  # no PREFECT_API_URL: the plugin's temporary server, which
            # boots faster than Prefect's (see prefect_seedream.embedded_server)
            await asyncio.to_thread(ensure_temporary_server)
        parameters = get_call_parameters(self.fn, args, kwargs)
        if self.prepare is not None:
            parameters = await self.prepare(parameters)
        return await super().__call__(**parameters, return_state=return_state, wait_for=wait_for)

    def with_options(self, *args: Any, **kwargs: Any) -> DualFlow:
        """:meth:`prefect.flows.Flow.with_options`, keeping the dispatch and ``prepare``."""
        copy = super().with_options(*args, **kwargs)
        copy.__class__ = type(self)
        copy.prepare = self.prepare  # type: ignore[attr-defined]
        return copy  # type: ignore[return-value]


def dual_task(**options: Any) -> Callable[[Callable[..., Any]], DualTask]:
    """``@task(...)`` for an async function, making a :class:`DualTask`."""
    def decorate(fn: Callable[..., Any]) -> DualTask:
        return DualTask(fn=fn, **options)

    return decorate


def dual_flow(
    *, prepare: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None, **options: Any
) -> Callable[[Callable[..., Any]], DualFlow]:
    """``@flow(...)`` for an async function, making a :class:`DualFlow`."""
    def decorate(fn: Callable[..., Any]) -> DualFlow:
        return DualFlow(fn, prepare=prepare, **options)

    return decorate
