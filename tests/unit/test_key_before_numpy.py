"""Commands derive the key (Argon2id: 64 MiB at once) before numpy and msgspec are imported,
so their peak memory is the interpreter with the libraries loaded so far plus those 64 MiB,
not numpy's ~13 MiB and msgspec's ~3 on top (docs/performance.md, peak RSS)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_PROBE = """
import sys
import drengine.crypto.keys as keys
real = keys.KdfParams.derive
def derive(self, password, salt):
    print("numpy loaded at key derivation:", "numpy" in sys.modules, file=sys.stderr)
    print("msgspec loaded at key derivation:", "msgspec" in sys.modules, file=sys.stderr)
    return real(self, password, salt)
keys.KdfParams.derive = derive
from drengine.cli.launch import main
sys.argv = ["drengine", *sys.argv[1:]]
main()
"""


def _run(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    tmp = tmp_path_factory.mktemp("keyfirst")
    env = {
        **os.environ,
        "DRENGINE_PASSWORD": "pw",
        "DRENGINE_REPOSITORY": str(tmp / "repo"),
        "DRENGINE_CACHE_DIR": str(tmp / "cache"),
    }
    (tmp / "src").mkdir()
    (tmp / "src" / "f").write_bytes(b"data\n")
    subprocess.run([sys.executable, "-m", "drengine", "init"], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    return env, tmp


@pytest.mark.parametrize(
    "args",
    [
        ("backup", "{src}"),
        ("snapshots",),
        ("ls", "latest"),
        ("restore", "latest", "--target", "{tmp}/out"),
        ("check", "--read-data"),
        ("dump", "latest", "{src}/f"),
        ("forget", "--keep-last", "5"),
    ],
)
def test_the_key_is_derived_before_numpy_is_imported(
    repo: tuple[dict[str, str], Path], args: tuple[str, ...]
) -> None:
    env, tmp = repo
    if args[0] != "backup":
        _run(env, "backup", str(tmp / "src"))
    argv = [a.format(src=tmp / "src", tmp=tmp) for a in args]
    said = _run(env, *argv)
    assert "numpy loaded at key derivation: False" in said, said
    assert "msgspec loaded at key derivation: False" in said, said
