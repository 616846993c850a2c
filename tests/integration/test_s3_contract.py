"""The whole ``Backend`` contract suite (tests/unit/test_backend_contract.py) on SeaweedFS.

The suite's tests are imported and run here against ``S3Backend`` talking to a real S3 server,
each test under a prefix of its own in the session's bucket.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from seaweed_server import SeaweedS3

from drengine.storage.base import Backend

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
import test_backend_contract as contract

pytestmark = pytest.mark.integration

# Every contract test that takes a backend; the local-only tests at its end take none.
globals().update(
    {
        name: fn
        for name, fn in vars(contract).items()
        if name.startswith("test_") and "backend" in inspect.signature(fn).parameters
    }
)


@pytest.fixture(params=["seaweedfs"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend(seaweed_env: SeaweedS3, s3_prefix: str) -> Iterator[Backend]:
    b = seaweed_env.backend(s3_prefix)
    yield b
    b.close()
