"""The public face: ``__all__`` is complete, sorted, and every contract name exists."""

import session_repo
import session_repo.errors
import session_repo.testing

CONTRACT_NAMES = {
    "SessionRepository",
    "SqlSessionRepository",
    "MemorySessionRepository",
    "NullSessionRepository",
    "RedisSessionRepository",
    "ResilientSessionRepository",
    "SessionStoreConfig",
    "SessionStoreMetrics",
    "Health",
    "Lease",
    "Clock",
    "SystemClock",
    "create_session_repository",
    "SessionRepoError",
    "InvalidInput",
    "ConfigError",
    "StorageError",
    "SchemaOutOfDate",
    "RepositoryClosed",
}


def test_all_is_sorted_and_unique() -> None:
    assert list(session_repo.__all__) == sorted(set(session_repo.__all__))


def test_all_names_exist() -> None:
    for name in session_repo.__all__:
        assert hasattr(session_repo, name), name


def test_contract_names_are_exported() -> None:
    assert set(session_repo.__all__) >= CONTRACT_NAMES


def test_public_members_are_all_listed() -> None:
    public = {
        name
        for name, value in vars(session_repo).items()
        if not name.startswith("_") and not getattr(value, "__file__", None)
    }
    assert public <= set(session_repo.__all__)


def test_errors_module_tree() -> None:
    e = session_repo.errors
    assert issubclass(e.InvalidInput, ValueError)
    assert issubclass(e.ConfigError, ValueError)
    assert issubclass(e.SchemaOutOfDate, e.StorageError)
    for name in e.__all__:
        assert issubclass(getattr(e, name), e.SessionRepoError)
    assert e.StorageError("x", transient=True).transient is True
    assert e.SchemaOutOfDate("x").transient is False


def test_testing_exports_fake_clock() -> None:
    assert "FakeClock" in session_repo.testing.__all__


def test_lease_is_a_frozen_dataclass_of_the_contracts_fields() -> None:
    import dataclasses

    fields = [(f.name, f.type) for f in dataclasses.fields(session_repo.Lease)]
    assert fields == [("owner", "str"), ("generation", "int"), ("expires_at", "datetime")]
    assert session_repo.Lease.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_package_is_typed() -> None:
    from importlib.resources import files

    assert files("session_repo").joinpath("py.typed").is_file()
