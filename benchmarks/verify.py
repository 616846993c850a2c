"""Checks that a restore reproduced what was backed up (see manifest.py for what is compared)."""

from __future__ import annotations

import os
from pathlib import Path

from manifest import DIRECTORY, Entry, Manifest, build_manifest, compare_manifests, describe


class VerificationFailed(RuntimeError):
    pass


def _fail(what: str, where: Path, problems: list[str]) -> VerificationFailed:
    shown = "\n    ".join(problems[:20])
    more = f"\n    ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    return VerificationFailed(
        f"{what} ({len(problems)} differences) in {where}:\n    {shown}{more}"
    )


def verify_tree(restored: Path, manifest: Manifest) -> str:
    """Raise unless ``restored`` holds exactly the tree of ``manifest``; say what it holds."""
    if not restored.is_dir():
        raise VerificationFailed(f"restore did not create {restored}")
    problems = compare_manifests(manifest, build_manifest(restored))
    if problems:
        raise _fail("RESTORE IS NOT IDENTICAL", restored, problems)
    return describe(manifest)


def verify_one_file(target: Path, restored: Path, expected: Entry) -> None:
    """Raise unless the only non-directory below ``target`` is ``restored``, with the
    expected size and SHA-256 (parent directories are expected, nothing else)."""
    if not target.is_dir():
        raise VerificationFailed(f"restore did not create {target}")
    rel = os.path.relpath(restored, target)
    found = {r: e for r, e in build_manifest(target).items() if e.kind != DIRECTORY}
    problems = compare_manifests({rel: expected}, found)
    if problems:
        raise _fail("SINGLE-FILE RESTORE IS NOT AS EXPECTED", target, problems)
