"""The same page-cache state for every tool before each measurement.

borg drops the pages of every file it reads from the page cache (``posix_fadvise`` with
``POSIX_FADV_DONTNEED``, so a backup does not evict the machine's working set), and of
the repository segments it writes. Whoever runs next after borg then reads the tree from
disk while the others read it from memory: in one run of the ``/usr/share`` copy,
drengine's backup took 10.4 and 10.8 s after borg and 5.7 s after itself, restic's 9.1 s
after borg and 5.9 s otherwise. So before each measurement the runner brings the files
the operation reads (the tree for a backup, the tool's repository for a restore or a check)
into one state for everyone: ``warm`` (every page read, the default: what a machine that
backs up the same tree every night sees) or ``cold`` (every page dropped, as borg leaves
them: what a first read of data nobody touched recently sees). Both need no privileges;
``/proc/sys/vm/drop_caches`` would also drop the tools' own programs and libraries.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MODES = ("warm", "cold")
_BUF = 1 << 20


def settle(root: Path, mode: str) -> int:
    """Bring every regular file below ``root`` into ``mode``; the number of files."""
    if mode not in MODES:
        raise ValueError(f"page-cache mode {mode!r}: one of {', '.join(MODES)}")
    buf = bytearray(_BUF)
    n = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NOATIME)
            except PermissionError:  # O_NOATIME needs the file's owner
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue  # a symlink, or gone: nothing of it to settle
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                if mode == "cold":
                    # Dirty pages are not dropped: the caller syncs first.
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                else:
                    while os.readv(fd, [buf]) == _BUF:
                        pass
                n += 1
            finally:
                os.close(fd)
    return n
