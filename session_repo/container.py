"""``Container``: the repository wired with python-dependency-injector.

Only the edges (an app, its tests, the examples) import this module; the library
never does. Nothing is read or built at import: the ``SESSION_STORE_*``
environment is read, and the repository built and opened, by
``await container.init_resources()``; ``await container.shutdown_resources()``
closes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from dependency_injector import containers, providers

from session_repo.clock import Clock, SystemClock
from session_repo.config import SessionStoreConfig
from session_repo.contract import SessionRepository
from session_repo.factory import create_session_repository

__all__ = ["Container", "open_repository", "resolve_settings"]


def resolve_settings(overrides: Mapping[str, Any] | None) -> SessionStoreConfig:
    """The environment's settings with ``container.config`` laid over them.

    Args:
        overrides: ``SessionStoreConfig`` field names to values; ``None`` for none.

    Returns:
        The settings ``container.repository`` is built from.

    Raises:
        ConfigError: a ``SESSION_STORE_*`` value or an override is malformed, or an
            override names no field.
    """
    return SessionStoreConfig.from_env().with_overrides(overrides or {})


async def open_repository(
    settings: SessionStoreConfig, clock: Clock
) -> AsyncIterator[SessionRepository]:
    """Build the configured repository, hold it open, close it on shutdown.

    Args:
        settings: what to build, as ``create_session_repository`` takes it.
        clock: where the repository's time comes from.

    Yields:
        The open repository.

    Raises:
        ConfigError: the settings name a backend that cannot be built.
        StorageError: the repository could not be opened.
    """
    async with create_session_repository(settings, clock=clock) as repository:
        yield repository


class _AsyncResource(providers.Resource[SessionRepository]):
    """A ``Resource`` that is always async, also when overridden by a plain object.

    Then ``await container.init_resources()``, ``await container.shutdown_resources()``
    and ``await container.repository()`` work the same in production and in a test
    that overrides the repository with ``providers.Object(...)``. (Containers copy
    their providers by calling the class without arguments, hence ``__init__``.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enable_async_mode()

    if TYPE_CHECKING:  # the stubs' first overload says "not awaitable"; here it always is

        def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[SessionRepository]:  # type: ignore[override]
            ...


class Container(containers.DeclarativeContainer):
    """The repository and what it is built from, each overridable in one line.

    Attributes:
        config: overrides of ``SessionStoreConfig`` fields, laid over the environment.
        clock: where the repository's time comes from (``SystemClock``).
        settings: the resolved ``SessionStoreConfig``.
        repository: the open repository, an async ``Resource``: built and opened by
            ``await container.init_resources()``, closed by
            ``await container.shutdown_resources()``.
    """

    config = providers.Configuration()
    clock = providers.Singleton(SystemClock)
    settings = providers.Callable(resolve_settings, config)
    repository = _AsyncResource(open_repository, settings=settings, clock=clock)
