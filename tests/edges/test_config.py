"""``SessionStoreConfig.from_env``: every variable, its default, and every bad value."""

from __future__ import annotations

import pytest

from session_repo import ConfigError, SessionStoreConfig
from session_repo.config import DEFAULT_URL


def test_defaults_match_the_contract() -> None:
    config = SessionStoreConfig.from_env({})
    assert config == SessionStoreConfig()
    assert config.enabled is True
    assert config.url == DEFAULT_URL == "sqlite+aiosqlite:///session-store.sqlite"
    assert config.ttl == 600.0
    assert config.cleanup_interval == 60.0
    assert config.retry_count == 3
    assert config.retry_delay == pytest.approx(0.1)
    assert config.max_sessions == 100_000
    assert config.fallback == "memory"
    assert config.auto_migrate is None
    assert config.pool_size == 5
    assert (config.connect_timeout, config.statement_timeout) == (10.0, 30.0)
    assert config.sqlite_synchronous == "NORMAL"
    assert config.journal_max == 100_000


def test_every_variable_is_read() -> None:
    config = SessionStoreConfig.from_env(
        {
            "SESSION_STORE_ENABLED": "false",
            "SESSION_STORE_URL": "postgresql+asyncpg://u@db/x",
            "SESSION_STORE_TTL_MS": "1500",
            "SESSION_STORE_CLEANUP_INTERVAL_MS": "0",
            "SESSION_STORE_CLEANUP_BATCH": "10",
            "SESSION_STORE_RETRY_COUNT": "5",
            "SESSION_STORE_RETRY_DELAY_MS": "250",
            "SESSION_STORE_MAX_SESSIONS": "7",
            "SESSION_STORE_FALLBACK": "NONE",
            "SESSION_STORE_AUTO_MIGRATE": "true",
            "SESSION_STORE_POOL_SIZE": "3",
            "SESSION_STORE_CONNECT_TIMEOUT_MS": "2500",
            "SESSION_STORE_STATEMENT_TIMEOUT_MS": "750",
            "SESSION_STORE_BUSY_TIMEOUT_MS": "1200",
            "SESSION_STORE_SQLITE_SYNCHRONOUS": "full",
            "SESSION_STORE_JOURNAL_MAX": "42",
            "SESSION_STORE_REDIS_WAIT_REPLICAS": "2",
            "SESSION_STORE_REDIS_WAIT_TIMEOUT_MS": "300",
        }
    )
    assert config == SessionStoreConfig(
        enabled=False,
        url="postgresql+asyncpg://u@db/x",
        ttl=1.5,
        cleanup_interval=0.0,
        cleanup_batch=10,
        retry_count=5,
        retry_delay=0.25,
        max_sessions=7,
        fallback="none",
        auto_migrate=True,
        pool_size=3,
        connect_timeout=2.5,
        statement_timeout=0.75,
        busy_timeout=1.2,
        sqlite_synchronous="FULL",
        journal_max=42,
        redis_wait_replicas=2,
        redis_wait_timeout=0.3,
    )


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({"SESSION_STORE_PATH": "/data/s.sqlite"}, "sqlite+aiosqlite:////data/s.sqlite"),
        ({"SESSION_STORE_PATH": "rel/s.sqlite"}, "sqlite+aiosqlite:///rel/s.sqlite"),
        ({"SESSION_STORE_PATH": ":memory:"}, "memory://"),
        ({"SESSION_STORE_PATH": "/x.sqlite", "SESSION_STORE_URL": "memory://"}, "memory://"),
        ({"SESSION_STORE_URL": "  "}, DEFAULT_URL),
        (
            {"SESSION_STORE_URL_FROM": "DATABASE_URL", "DATABASE_URL": "postgres://a@db/app"},
            "postgres://a@db/app",
        ),
        (
            {"SESSION_STORE_URL_FROM": "REDIS_URL", "REDIS_URL": "rediss://h:6380/0"},
            "rediss://h:6380/0",
        ),
        (  # SESSION_STORE_URL wins
            {"SESSION_STORE_URL": "memory://", "SESSION_STORE_URL_FROM": "DATABASE_URL"},
            "memory://",
        ),
    ],
)
def test_url_resolution(environ: dict[str, str], url: str) -> None:
    assert SessionStoreConfig.from_env(environ).url == url


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SESSION_STORE_ENABLED", "maybe"),
        ("SESSION_STORE_URL", "ftp://x"),
        ("SESSION_STORE_URL", "not a url"),
        ("SESSION_STORE_TTL_MS", "abc"),
        ("SESSION_STORE_TTL_MS", "0"),
        ("SESSION_STORE_TTL_MS", "-5"),
        ("SESSION_STORE_TTL_MS", "nan"),
        ("SESSION_STORE_TTL_MS", "inf"),
        ("SESSION_STORE_CLEANUP_INTERVAL_MS", "-1"),
        ("SESSION_STORE_CLEANUP_BATCH", "0"),
        ("SESSION_STORE_RETRY_COUNT", "0"),
        ("SESSION_STORE_RETRY_COUNT", "1.5"),
        ("SESSION_STORE_RETRY_DELAY_MS", "soon"),
        ("SESSION_STORE_MAX_SESSIONS", "0"),
        ("SESSION_STORE_FALLBACK", "disk"),
        ("SESSION_STORE_AUTO_MIGRATE", "perhaps"),
        ("SESSION_STORE_POOL_SIZE", "0"),
        ("SESSION_STORE_CONNECT_TIMEOUT_MS", "0"),
        ("SESSION_STORE_STATEMENT_TIMEOUT_MS", "-1"),
        ("SESSION_STORE_BUSY_TIMEOUT_MS", "0"),
        ("SESSION_STORE_SQLITE_SYNCHRONOUS", "OFF"),
        ("SESSION_STORE_SQLITE_SYNCHRONOUS", "extra"),
        ("SESSION_STORE_JOURNAL_MAX", "0"),
        ("SESSION_STORE_JOURNAL_MAX", "many"),
    ],
)
def test_bad_values_name_the_variable_and_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        SessionStoreConfig.from_env({name: value})
    assert name in str(info.value)
    assert value in str(info.value)
    assert isinstance(info.value, ValueError)


def test_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_STORE_TTL_MS", "2000")
    assert SessionStoreConfig.from_env().ttl == 2.0


def test_config_is_frozen_and_validated() -> None:
    config = SessionStoreConfig()
    with pytest.raises(AttributeError):
        config.ttl = 1  # type: ignore[misc]
    with pytest.raises(ConfigError, match="ttl"):
        SessionStoreConfig(ttl=0)
    with pytest.raises(ConfigError, match="fallback"):
        SessionStoreConfig(fallback="disk")  # type: ignore[arg-type]


def test_overrides() -> None:
    config = SessionStoreConfig().with_overrides({"url": "memory://", "ttl": 5})
    assert (config.url, config.ttl) == ("memory://", 5)
    with pytest.raises(ConfigError, match="colour"):
        SessionStoreConfig().with_overrides({"colour": "blue"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sqlite_synchronous", "OFF"),
        ("sqlite_synchronous", "normal"),
        ("journal_max", 0),
        ("redis_wait_replicas", -1),
        ("redis_wait_timeout", 0),
    ],
)
def test_bad_fields_are_config_errors(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        SessionStoreConfig(**{name: value})  # type: ignore[arg-type]


def test_url_from_a_variable_that_is_not_set_is_refused() -> None:
    with pytest.raises(ConfigError, match="SESSION_STORE_URL_FROM='DATABASE_URL'"):
        SessionStoreConfig.from_env({"SESSION_STORE_URL_FROM": "DATABASE_URL"})


def test_a_bad_url_from_another_variable_is_named_by_it_without_its_password() -> None:
    environ = {"SESSION_STORE_URL_FROM": "DATABASE_URL", "DATABASE_URL": "ftp://u:hunter2@h/x"}
    with pytest.raises(ConfigError, match=r"^DATABASE_URL=") as info:
        SessionStoreConfig.from_env(environ)
    assert "hunter2" not in str(info.value)
