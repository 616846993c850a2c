"""Disk images as a source: a change in one place adds little, restores are identical and
sparse, and writing onto a device needs its path repeated."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_support import Repo, assert_one_line_error

MiB = 1 << 20


def _image(path: Path) -> None:
    """256 MiB: 40 MiB of random data in stretches, the rest zeros (a mostly empty disk)."""
    with open(path, "wb") as f:
        f.truncate(256 * MiB)
        for i in range(10):
            f.seek(i * 25 * MiB)
            f.write(os.urandom(4 * MiB))


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(8 * MiB):
            h.update(b)
    return h.hexdigest()


def test_image_change_in_one_place_adds_little_and_restores_identical(
    repo: Repo, tmp_path: Path
) -> None:
    img = tmp_path / "disk.img"
    _image(img)
    first = repo.backup("--source", f"block://{img}")
    assert first["bytes_total"] == 256 * MiB
    snap = repo.snapshots()[-1]
    part = snap["sources"][0]
    assert part["kind"] == "block" and part["type"] == "image file"
    assert part["entries"][0]["sha256"] == _sha(img)
    with open(img, "r+b") as f:  # 1 MiB rewritten in the middle of a data stretch
        f.seek(100 * MiB + 1234)
        f.write(os.urandom(MiB))
    second = repo.backup("--source", f"block://{img}")
    # What the repository grows by: the chunks around the change (up to 4 MiB each) and the
    # first zero chunk after them, compressed. Before compression the new chunks may reach
    # about 13 MiB, by where the boundaries fall in the random data.
    assert second["bytes_stored"] < 8 * MiB, second
    assert second["bytes_new"] < 16 * MiB, second
    target = tmp_path / "restored"
    repo.restore("latest", target)
    out = target / "block" / str(img).lstrip("/")
    assert _sha(out) == _sha(img) == repo.snapshots()[-1]["sources"][0]["entries"][0]["sha256"]
    assert out.stat().st_blocks * 512 < 100 * MiB  # the zero stretches came back as holes
    assert (
        repo.run("dump", "latest").stdout[100 * MiB : 101 * MiB]
        == img.read_bytes()[100 * MiB : 101 * MiB]
    )


def test_writing_onto_a_device_needs_the_path_repeated(repo: Repo, tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    _image(img)
    repo.backup("--source", f"block://{img}")
    dev = tmp_path / "dev.img"  # an existing image file stands in for a device
    dev.write_bytes(os.urandom(MiB))
    before = dev.read_bytes()
    r = repo.run("restore", "latest", "--to", f"block://{dev}", check_code=2)
    assert "--confirm-device" in assert_one_line_error(r)
    r = repo.run(
        "restore", "latest", "--to", f"block://{dev}", "--confirm-device", "/dev/other",
        check_code=2,
    )  # fmt: skip
    assert dev.read_bytes() == before
    r = repo.run("restore", "latest", "--to", f"block://{dev}", "--confirm-device", str(dev))
    assert "SHA-256 matches" in r.out
    assert _sha(dev) == _sha(img)


def test_block_bad_input(repo: Repo, tmp_path: Path) -> None:
    r = repo.run("backup", "--source", "block:///dev/drengine-no-such-disk", check_code=13)
    assert "No such file or directory" in assert_one_line_error(r)
    r = repo.run("backup", "--source", f"block://{tmp_path}", check_code=13)
    assert "neither a block device nor a regular file" in assert_one_line_error(r)
    assert repo.snapshots() == []


@pytest.fixture
def loop_devices(tmp_path: Path) -> Iterator[list[str]]:
    """Two loop devices over image files (root and /dev/loop-control needed)."""
    devices: list[str] = []
    try:
        for name in ("a.img", "b.img"):
            img = tmp_path / name
            img.write_bytes(b"")
            os.truncate(img, 32 * MiB)
            out = subprocess.run(
                ["losetup", "-f", "--show", str(img)], capture_output=True, text=True
            )
            if out.returncode != 0:
                pytest.skip(f"no loop devices here: {out.stderr.strip()}")
            devices.append(out.stdout.strip())
        yield devices
    finally:
        for d in devices:
            subprocess.run(["losetup", "-d", d], check=False)


def test_a_real_block_device_backs_up_and_is_written_back(
    repo: Repo, loop_devices: list[str]
) -> None:
    src, dst = loop_devices
    data = os.urandom(3 * MiB)
    with open(src, "r+b") as f:
        f.seek(10 * MiB)
        f.write(data)
        os.fsync(f.fileno())
    repo.backup("--source", f"block://{src}")
    part = repo.snapshots()[-1]["sources"][0]
    assert part["type"] == "block device" and part["size"] == 32 * MiB
    assert part["entries"][0]["sha256"] == _sha(Path(src))
    r = repo.run("restore", "latest", "--to", f"block://{dst}", "--confirm-device", dst)
    assert "SHA-256 matches" in r.out
    assert _sha(Path(dst)) == _sha(Path(src))
