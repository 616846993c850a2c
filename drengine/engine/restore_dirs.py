"""Open directories of a restore, each reached from its parent's descriptor, never by path.

Every directory below the target is opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to its
parent, so a symlink planted anywhere in the target (``dir -> /root/.ssh``) is refused, not
followed, and paths longer than PATH_MAX work. Descriptors are kept in a bounded LRU: a
restore may create 100,000 directories and the default limit is 1024 descriptors. A writer
thread holds a reference while it uses one, so it is never closed under it; an evicted
directory is opened again from its nearest open ancestor.
"""

from __future__ import annotations

import errno
import os
import resource
import threading
from collections import OrderedDict
from collections.abc import Sequence

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
ROOT = 0  # the index of the target directory itself


class NotADirectory(OSError):
    """Something other than a directory (or a symlink) is where a directory must go."""


def default_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(8, min(256, soft // 4))


def open_dir(dir_fd: int, name: bytes) -> tuple[int, bool]:
    """(descriptor, whether it is ``O_PATH`` only) of the directory ``name`` below
    ``dir_fd``; ``NotADirectory`` if it is anything else, a symlink included."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd), False
    except PermissionError:
        # Searchable but not readable (an existing directory not ours): enough to work in.
        return os.open(name, _PATH_FLAGS, dir_fd=dir_fd), True
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            raise NotADirectory(e.errno, "exists in the target and is not a directory") from None
        raise


class DirFds:
    """Descriptors of the directories ``0..n-1`` (0 is the target, ``parents[i]`` the index
    of ``i``'s parent, ``names[i]`` its name there)."""

    def __init__(
        self, root_fd: int, parents: Sequence[int], names: Sequence[bytes], limit: int
    ) -> None:
        self._parents = parents
        self._names = names
        self._limit = max(limit, 4)
        self._fds: dict[int, tuple[int, bool]] = {ROOT: (root_fd, False)}
        self._refs: dict[int, int] = {}
        self._idle: OrderedDict[int, None] = OrderedDict()  # open, unreferenced, LRU first
        self._lock = threading.Lock()
        self.peak = 1  # most descriptors open at once (tests check the bound)

    def make(self, i: int) -> bool:
        """Create directory ``i`` (mode 0700 until its metadata is applied, last) or accept
        the directory already there (False); ``NotADirectory`` if something else is."""
        parent = self._parents[i]
        pfd = self.acquire(parent)
        created = True
        try:
            try:
                os.mkdir(self._names[i], 0o700, dir_fd=pfd)
            except FileExistsError:
                created = False
            opened = open_dir(pfd, self._names[i])
            with self._lock:
                self._add(i, opened, held=False)
        finally:
            self.release(parent)
        return created

    def acquire(self, i: int) -> int:
        """The descriptor of directory ``i``, held until ``release(i)``. Opened from the
        nearest open ancestor if it is not open; ``NotADirectory`` if a component changed
        into something else meanwhile."""
        with self._lock:
            if i in self._fds:
                self._ref(i)
                return self._fds[i][0]
            chain = []
            j = i
            while j not in self._fds:
                chain.append(j)
                j = self._parents[j]
            self._ref(j)
            try:
                for k in reversed(chain):
                    self._add(k, open_dir(self._fds[j][0], self._names[k]), held=True)
                    self._unref(j)
                    j = k
            except BaseException:
                self._unref(j)
                raise
            return self._fds[i][0]

    def path_only(self, i: int) -> bool:
        with self._lock:
            return self._fds[i][1]

    def release(self, i: int) -> None:
        with self._lock:
            self._unref(i)

    def close(self) -> None:
        with self._lock:
            for i, (fd, _) in self._fds.items():
                if i != ROOT:
                    os.close(fd)
            self._fds = {ROOT: self._fds[ROOT]}
            self._idle.clear()

    # ---- internals (called with the lock held) ---------------------------------------------

    def _add(self, i: int, opened: tuple[int, bool], held: bool) -> None:
        self._fds[i] = opened
        if held:
            self._refs[i] = 1
        else:
            self._idle[i] = None
        self._trim()
        self.peak = max(self.peak, len(self._fds))

    def _ref(self, i: int) -> None:
        self._refs[i] = self._refs.get(i, 0) + 1
        self._idle.pop(i, None)

    def _unref(self, i: int) -> None:
        left = self._refs[i] - 1
        if left:
            self._refs[i] = left
            return
        del self._refs[i]
        if i != ROOT:
            self._idle[i] = None
            self._trim()

    def _trim(self) -> None:
        while len(self._fds) > self._limit and self._idle:
            k, _ = self._idle.popitem(last=False)
            os.close(self._fds.pop(k)[0])
