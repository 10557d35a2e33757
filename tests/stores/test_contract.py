"""Run the store contracts (tests/stores/contract.py, attempts.py) against every store.

``STORES`` is the one list: a store's name and its factory (see contract.py for what
a factory is). Adding a store is adding its line here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from steadyq.brokers import open_store
from steadyq.telemetry.store import EventStore
from steadyq.telemetry.store_memory import MemoryStore
from tests.stores.attempts import AttemptCounterContract
from tests.stores.contract import Open, StoreContract, StoreFactory


@contextmanager
def memory_store(tmp_path: Path) -> Iterator[Open]:
    store = MemoryStore()  # one object: a memory store has no second connection
    yield lambda: store
    store.close()


@contextmanager
def sqlite_store(tmp_path: Path) -> Iterator[Open]:
    opened: list[EventStore] = []

    def open_() -> EventStore:
        opened.append(open_store(f"sqlite:///{tmp_path}/store.db"))
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


@contextmanager
def postgres_store(tmp_path: Path) -> Iterator[Open]:
    """Stores on one fresh schema of the machine's PostgreSQL (tests/postgres_db.py):
    skipped without it, failed under CI."""
    from tests.postgres_db import postgres_url

    opened: list[EventStore] = []
    with postgres_url() as url:

        def open_() -> EventStore:
            opened.append(open_store(url))
            return opened[-1]

        try:
            yield open_
        finally:
            for store in opened:
                store.close()


STORES: dict[str, StoreFactory] = {
    "memory": memory_store,
    "sqlite": sqlite_store,
    "postgres": postgres_store,
}


@pytest.fixture(params=sorted(STORES))
def store_factory(request: pytest.FixtureRequest) -> StoreFactory:
    return STORES[request.param]


class TestStoreContract(StoreContract):
    pass


class TestAttemptCounterContract(AttemptCounterContract):
    pass
