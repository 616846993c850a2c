"""What a restore creates, found by an iterative walk of the snapshot's trees.

Directories are listed parents first, each with the index of its parent, so the restore can
reach every one from the target's descriptor; files, symlinks and special files name their
directory by index. Names that would escape the target, duplicates and entries whose fields
are invalid are reported here and left out (an invalid directory is still created, without
its metadata, so what is below it restores).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from drengine.core.model import Node
from drengine.engine.restore_dirs import ROOT
from drengine.engine.tree_paths import TreeCache

Report = Callable[[bytes, str], None]  # (path relative to the target, message)


@dataclass(slots=True)
class PlanDir:
    parent: int  # index of the parent in Plan.dirs; -1 for the target itself
    name: bytes
    path: bytes  # relative to the target; b"" for the target
    node: Node | None


@dataclass(slots=True, eq=False)
class Entry:
    dir: int  # index of its directory in Plan.dirs
    name: bytes
    node: Node
    done: bool = False  # a file: written, verified and under its final name


@dataclass
class Plan:
    dirs: list[PlanDir] = field(default_factory=lambda: [PlanDir(-1, b"", b"", None)])
    files: list[Entry] = field(default_factory=list)
    specials: list[Entry] = field(default_factory=list)  # symlinks, FIFOs, devices, sockets

    def path(self, e: Entry) -> bytes:
        base = self.dirs[e.dir].path
        return base + b"/" + e.name if base else e.name


def bad_name(name: bytes) -> bool:
    return name in (b"", b".", b"..") or b"/" in name or b"\0" in name


def _included(parts: list[bytes], includes: list[list[bytes]]) -> tuple[bool, bool]:
    """(on the way to an included path or inside one, inside one)."""
    inside = any(parts[: len(inc)] == inc for inc in includes)
    return inside or any(inc[: len(parts)] == parts for inc in includes), inside


def build_plan(trees: TreeCache, root: bytes, includes: list[list[bytes]], report: Report) -> Plan:
    """Everything below tree ``root`` that ``includes`` selects (all if it is empty).

    Ancestors of an included path are planned as directories, their other entries not.
    """
    plan = Plan()
    # (directory index, whole subtree included, path components while not, entries left,
    # names seen so far in this tree)
    Frame = tuple[int, bool, list[bytes], Iterator[Node], set[bytes]]
    stack: list[Frame] = [(ROOT, not includes, [], iter(trees.load(root)), set())]
    while stack:
        dir_i, whole, parts, nodes, seen = stack[-1]
        node = next(nodes, None)
        if node is None:
            stack.pop()
            continue
        base = plan.dirs[dir_i].path
        rel = base + b"/" + node.name if base else node.name
        if bad_name(node.name) or node.name in seen:
            report(rel, "refused: the name would escape the target or is a duplicate")
            continue
        seen.add(node.name)
        inside = whole
        sub: list[bytes] = []
        if not whole:
            sub = [*parts, node.name]
            wanted, inside = _included(sub, includes)
            if not wanted:
                continue
        if node.type == "dir":
            plan.dirs.append(PlanDir(dir_i, node.name, rel, node))
            below = trees.load_below(node.subtree) if node.subtree is not None else []
            if below is None:  # the directory is created; what was in it cannot be known
                assert node.subtree is not None
                report(rel, f"its contents could not be read: {trees.failed[node.subtree]}")
            elif below:
                frame: Frame = (len(plan.dirs) - 1, inside, sub, iter(below), set())
                stack.append(frame)
        elif not inside:
            continue
        elif node.invalid:
            report(rel, f"refused: invalid in the snapshot ({node.invalid})")
        elif node.type == "file":
            plan.files.append(Entry(dir_i, node.name, node))
        else:
            plan.specials.append(Entry(dir_i, node.name, node))
    return plan
