"""Helpers for the end-to-end CLI tests (imported by conftest.py and the test modules).

Every test runs the real command line as a subprocess (``python -m drengine ...``) with a cheap
key derivation, a password in the environment and the local cache inside the test's tmp dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

PASSWORD = "e2e correct horse battery staple"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 180.0
KDF_ARGS = ("--kdf-memory-mib", "8", "--kdf-iterations", "1")

Arg = str | bytes | os.PathLike[str] | os.PathLike[bytes]


class Result(subprocess.CompletedProcess[bytes]):
    """A finished CLI run; stdout and stderr are bytes."""

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    @property
    def output(self) -> str:
        """stdout and stderr together, for "the message names X" assertions."""
        return self.out + "\n" + self.err

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:  # pragma: no cover - only on failure
            raise AssertionError(
                f"stdout of {self.cmdline()} is not one JSON document ({exc}):\n"
                f"stdout: {self.out[:2000]!r}\nstderr: {self.err[:2000]!r}"
            ) from None

    def cmdline(self) -> str:
        return " ".join(os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in self.args)

    def describe(self) -> str:
        return (
            f"command: {self.cmdline()}\nexit code: {self.returncode}\n"
            f"stdout: {self.out[-3000:]}\nstderr: {self.err[-3000:]}"
        )


class CLI:
    """Runs ``python -m drengine`` with a controlled environment."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cache_dir = workdir / "cache"
        # Nothing from the caller's environment may steer the tool: no DRENGINE_* settings,
        # and no terminal width or colour forcing (the output must not depend on them).
        dropped = {"COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"}
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("DRENGINE_") and k not in dropped
        }
        env["DRENGINE_PASSWORD"] = PASSWORD
        env["DRENGINE_CACHE_DIR"] = str(self.cache_dir)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        env["NO_COLOR"] = "1"
        self.env = env

    def __call__(
        self,
        *args: Arg,
        check_code: int | None = 0,
        env_extra: Mapping[str, str | None] | None = None,
        input: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        prefix: Sequence[str] = (),
        new_session: bool = False,
    ) -> Result:
        """Run the CLI. ``env_extra`` values of None remove the variable.

        ``check_code`` None accepts any exit code. stdin is /dev/null unless ``input`` is
        given, so a password prompt can never hang a test.
        """
        env = dict(self.env)
        for key, value in (env_extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        cmd: list[Arg] = [*prefix, sys.executable, "-m", "drengine", *args]
        proc = subprocess.run(
            cmd,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            env=env,
            cwd=self.workdir,
            timeout=timeout,
            start_new_session=new_session,
            check=False,
        )
        result = Result(proc.args, proc.returncode, proc.stdout, proc.stderr)
        if check_code is not None and result.returncode != check_code:
            pytest.fail(f"expected exit code {check_code}\n{result.describe()}", pytrace=False)
        return result


class Repo:
    """A repository directory plus the CLI bound to it with ``--repo``."""

    def __init__(self, cli: CLI, path: Path) -> None:
        self.cli = cli
        self.path = path

    def run(self, *args: Arg, **kwargs: Any) -> Result:
        return self.cli("--repo", str(self.path), *args, **kwargs)

    def init(self, *extra: Arg, **kwargs: Any) -> Result:
        return self.run("init", *KDF_ARGS, *extra, **kwargs)

    def backup(self, *args: Arg, check_code: int | None = 0, **kwargs: Any) -> dict[str, Any]:
        """``backup --json ARGS``; returns the parsed summary object."""
        result = self.run("backup", "--json", *args, check_code=check_code, **kwargs)
        data = result.json()
        assert isinstance(data, dict), result.describe()
        return data

    def snapshots(self, *args: Arg, **kwargs: Any) -> list[dict[str, Any]]:
        result = self.run("snapshots", "--json", *args, **kwargs)
        data = result.json()
        assert isinstance(data, list), result.describe()
        return data

    def ls(self, *args: Arg, **kwargs: Any) -> list[dict[str, Any]]:
        result = self.run("ls", *args, "--json", **kwargs)
        data = result.json()
        assert isinstance(data, list), result.describe()
        return data

    def restore(self, snapshot: str, target: Path, *extra: Arg, **kwargs: Any) -> Result:
        return self.run("restore", snapshot, "--target", str(target), *extra, **kwargs)

    def files(self, *, exclude_locks: bool = True) -> set[str]:
        """Relative paths of all files in the repository directory."""
        found = set()
        for path in self.path.rglob("*"):
            rel = path.relative_to(self.path).as_posix()
            if path.is_file() and not (exclude_locks and rel.startswith("locks/")):
                found.add(rel)
        return found


def make_repo(cli: CLI, path: Path) -> Repo:
    repo = Repo(cli, path)
    repo.init()
    return repo


# --------------------------------------------------------------------------- assertions


def assert_one_line_error(result: Result) -> str:
    """The documented error format: one line on stderr, ``drengine: error: ...``."""
    assert "Traceback" not in result.err, result.describe()
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one line on stderr\n{result.describe()}"
    assert lines[0].startswith("drengine: error:"), result.describe()
    return lines[0]


# --------------------------------------------------------------------------- file trees


def sha256_file(path: Arg) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFSOCK: "socket",
}


def entry_meta(path: bytes, *, content: bool = True) -> dict[str, Any]:
    st = os.lstat(path)
    kind = _TYPES[stat.S_IFMT(st.st_mode)]
    meta: dict[str, Any] = {
        "type": kind,
        "mode": oct(stat.S_IMODE(st.st_mode)),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "mtime_ns": st.st_mtime_ns,
    }
    if kind == "file":
        meta["size"] = st.st_size
        if content:
            meta["sha256"] = sha256_file(path)
    elif kind == "symlink":
        meta["target"] = os.readlink(path)
    elif kind in ("chardev", "blockdev"):
        meta["rdev"] = st.st_rdev
    if kind != "symlink":
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            names = []
        meta["xattrs"] = {
            name: os.getxattr(path, name, follow_symlinks=False)
            for name in sorted(names)
            if name.startswith("user.")
        }
    return meta


def walk_bytes(root: bytes) -> Iterator[bytes]:
    """All paths below root (root excluded), as bytes, without following symlinks."""
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        yield entry.path
        if entry.is_dir(follow_symlinks=False):
            yield from walk_bytes(entry.path)


def scan_tree(root: Arg, *, content: bool = True) -> dict[bytes, dict[str, Any]]:
    """Metadata of root and everything below it, keyed by path relative to root (bytes)."""
    rootb = os.fsencode(root)
    tree = {b".": entry_meta(rootb, content=content)}
    for path in walk_bytes(rootb):
        tree[os.path.relpath(path, rootb)] = entry_meta(path, content=content)
    return tree


def diff_trees(
    expected: dict[bytes, dict[str, Any]], actual: dict[bytes, dict[str, Any]], limit: int = 40
) -> list[str]:
    problems = []
    for name in sorted(expected.keys() - actual.keys()):
        problems.append(f"missing after restore: {name!r} ({expected[name]['type']})")
    for name in sorted(actual.keys() - expected.keys()):
        problems.append(f"unexpected after restore: {name!r} ({actual[name]['type']})")
    for name in sorted(expected.keys() & actual.keys()):
        exp, act = expected[name], actual[name]
        for key in sorted(exp.keys() | act.keys()):
            if exp.get(key) != act.get(key):
                problems.append(f"{name!r}: {key} expected {exp.get(key)!r}, got {act.get(key)!r}")
    if len(problems) > limit:
        problems = [*problems[:limit], f"... and {len(problems) - limit} more"]
    return problems


def assert_same_tree(expected: dict[bytes, dict[str, Any]], actual: dict[bytes, dict[str, Any]]):
    problems = diff_trees(expected, actual)
    assert not problems, "restored tree differs from the source:\n" + "\n".join(problems)


def restored_path(target: Path, source: Path) -> Path:
    """Where ``restore --target target`` puts an absolute source path."""
    assert source.is_absolute()
    return target / source.relative_to(source.anchor)


def write_random(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


# --------------------------------------------------------------------------- hostile setups


def dac_drop_prefix(tmp_path: Path) -> list[str] | None:
    """A command prefix that runs as root without the capabilities that bypass file modes
    ([] when not root), so a test can make a file unreadable; None where that cannot work."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    probe = tmp_path / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        proc = subprocess.run([*prefix, "cat", str(probe)], capture_output=True, check=False)
    except FileNotFoundError:
        return None
    finally:
        probe.unlink()
    return prefix if proc.returncode != 0 else None


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``2m``) mounted at ``path``: a disk that fills up. Skips the test
    where mounting is not permitted."""
    path.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
