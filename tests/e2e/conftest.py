"""Fixtures for the end-to-end CLI tests; the helpers live in e2e_support.py.

Every test runs the real command line as a subprocess (``python -m drengine ...``) with a cheap
key derivation, a password in the environment and the local cache inside the test's tmp dir.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import CLI, Repo, make_repo


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    return CLI(tmp_path)


@pytest.fixture
def run(cli: CLI) -> CLI:
    """``run(*args, check_code=0, env_extra=None, input=None) -> Result``."""
    return cli


@pytest.fixture
def repo(cli: CLI, tmp_path: Path) -> Repo:
    return make_repo(cli, tmp_path / "repo")
