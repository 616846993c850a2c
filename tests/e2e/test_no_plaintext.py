"""The repository must not reveal file names, contents, paths, tags, users or hosts."""

from __future__ import annotations

import contextlib
import getpass
import os
import subprocess
from pathlib import Path

from e2e_support import CLI, make_repo

NAME_MARKER = "SECRETNAME-7f3a"
CONTENT_MARKER = "SECRETCONTENT-91bc"
RANDOM_MARKER = "SECRETINRANDOM-5d2e"
DIR_MARKER = "SECRETDIR-c04d"
LINK_MARKER = "SECRETLINK-a8e1"
TAG_MARKER = "SECRETTAG-66f0"
XATTR_MARKER = "SECRETXATTR-1b9c"
HOST_MARKER = "SECRETHOST-e27b"


def hostname_prefix() -> list[str] | None:
    """Run the backup in its own UTS namespace under a distinctive host name, if we may."""
    prefix = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', HOST_MARKER]
    try:
        proc = subprocess.run([*prefix, "hostname"], capture_output=True, check=False)
    except FileNotFoundError:
        return None
    return prefix if proc.stdout.strip() == HOST_MARKER.encode() else None


def forms(text: str) -> dict[str, bytes]:
    return {
        "utf-8": text.encode(),
        "utf-16-le": text.encode("utf-16-le"),
        "utf-16-be": text.encode("utf-16-be"),
    }


def test_repository_holds_no_plaintext(cli: CLI, tmp_path: Path) -> None:
    repo = make_repo(cli, tmp_path / "repo")
    src = (tmp_path / DIR_MARKER).resolve()
    (src / f"{NAME_MARKER}-dir").mkdir(parents=True)
    (src / f"{NAME_MARKER}.txt").write_bytes(f"{CONTENT_MARKER}\n".encode() * 5000)
    (src / f"{NAME_MARKER}-dir" / "plain").write_bytes(
        f"one line with {CONTENT_MARKER} in it\n".encode()
    )
    (src / "utf16.txt").write_bytes((CONTENT_MARKER + "\n").encode("utf-16-le") * 100)
    # Incompressible data with the marker embedded: compression cannot hide it, only encryption.
    blocks = [os.urandom(64 * 1024) + RANDOM_MARKER.encode() for _ in range(16)]
    random_data = b"".join(blocks)
    (src / "random.bin").write_bytes(random_data)
    (src / "tiny").write_bytes(CONTENT_MARKER.encode())
    os.symlink(f"/nowhere/{LINK_MARKER}", src / "link")
    with contextlib.suppress(OSError):
        os.setxattr(src / "tiny", "user.note", XATTR_MARKER.encode())

    prefix = hostname_prefix()
    result = repo.run("backup", "--json", "--tag", TAG_MARKER, str(src), prefix=prefix or ())
    snap = repo.snapshots()[0]
    assert snap["id"] == result.json()["snapshot_id"]
    assert snap["paths"] == [str(src)]
    assert snap["tags"] == [TAG_MARKER]
    if prefix:
        assert snap["host"] == HOST_MARKER, "the backup did not record the namespace's host name"

    secrets = {
        "file name": NAME_MARKER,
        "file content": CONTENT_MARKER,
        "content of random file": RANDOM_MARKER,
        "source directory": DIR_MARKER,
        "source path": str(src),
        "symlink target": LINK_MARKER,
        "tag": TAG_MARKER,
        "xattr": XATTR_MARKER,
    }
    if prefix:
        secrets["host name"] = HOST_MARKER
    host = snap["host"]
    if len(host) >= 6:  # shorter strings turn up in random bytes by chance
        secrets["host name (recorded)"] = host
    user = getpass.getuser()
    if len(user) >= 4:
        secrets["user name"] = user

    stored = [p for p in repo.path.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in stored)
    assert total > len(random_data), f"the repository holds only {total} bytes: wrong directory?"

    found = []
    for path in stored:
        data = path.read_bytes()
        for what, text in secrets.items():
            for encoding, needle in forms(text).items():
                if needle in data:
                    rel = path.relative_to(repo.path)
                    found.append(f"{what} ({text!r}, {encoding}) in {rel}")
    assert not found, "plaintext in the repository:\n" + "\n".join(found)
