"""Several key files open one repository; passwords can be added, changed and removed."""

from __future__ import annotations

from pathlib import Path

from e2e_support import CLI, make_repo

KDF = ("--kdf-memory-mib", "8", "--kdf-iterations", "1")


def test_key_add_passwd_remove(cli: CLI, tmp_path: Path) -> None:
    repo = make_repo(cli, tmp_path / "repo")
    (first,) = repo.run("key", "list", "--json").json()
    assert first["current"] is True

    repo.run("key", "add", *KDF, env_extra={"DRENGINE_NEW_PASSWORD": "second"})
    keys = repo.run("key", "list", "--json").json()
    assert len(keys) == 2
    repo.run("snapshots", env_extra={"DRENGINE_PASSWORD": "second"})  # opens with either

    # The key in use cannot be removed; the other one can.
    repo.run("key", "remove", first["id"][:8], check_code=2)
    second = next(k for k in keys if not k["current"])
    repo.run("key", "remove", second["id"][:8])
    repo.run("snapshots", env_extra={"DRENGINE_PASSWORD": "second"}, check_code=12)

    repo.run("key", "passwd", *KDF, env_extra={"DRENGINE_NEW_PASSWORD": "third"})
    repo.run("snapshots", check_code=12)  # the old password no longer opens it
    repo.run("snapshots", env_extra={"DRENGINE_PASSWORD": "third"})
    assert (
        len(repo.run("key", "list", "--json", env_extra={"DRENGINE_PASSWORD": "third"}).json()) == 1
    )
