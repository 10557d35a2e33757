"""The Pub/Sub emulator for the tests that need it: one per session, started on a free
loopback port (or the one ``PUBSUB_EMULATOR_HOST`` already names) and stopped after."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import require_service
from tests.pubsub_emulator import Emulator, gcloud_available

PROJECT = "steadyq-test"


@pytest.fixture(scope="session")
def pubsub_host() -> Iterator[str]:
    """host:port of a running emulator; PUBSUB_EMULATOR_HOST is set while it runs."""
    try:
        import google.cloud.pubsub_v1  # noqa: F401
    except ImportError:
        require_service(False, "google-cloud-pubsub is not installed (pip install -e .[pubsub])")
    given = os.environ.get("PUBSUB_EMULATOR_HOST")
    if given:
        yield given
        return
    require_service(gcloud_available(), "the Pub/Sub emulator needs gcloud and java")
    with Emulator() as emulator:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        try:
            yield emulator.host
        finally:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique resource names, so tests never share a topic or subscription."""
    return lambda stem: f"{stem}-{uuid.uuid4().hex[:10]}"
