"""A directory on a local file system: the embedded default backend.

Writes go to a temporary file in the target directory, are fsynced, then renamed into place,
and the directory is fsynced, so a crash leaves either the whole object or none of it.
``put_if_absent`` publishes with ``link(2)``, which fails atomically if the name exists.

A failed write (a full disk, EIO) removes its temporary file; one that was killed cannot, so
``list_temporary``/``remove_temporary`` let check report and prune remove what is left.
Directories are created 0700 and files 0600, whatever the umask.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from drengine.core.errors import ObjectExists, ObjectNotFound, StorageError
from drengine.core.fsutil import FILE_MODE, make_dirs, reason, unlink_quietly
from drengine.storage.base import (
    BackendDefaults,
    Buffer,
    Capabilities,
    ObjectInfo,
    TemporaryFile,
    check_name,
)

_TMP_PREFIX = ".tmp-"
# Packs are immutable and named by their hash, so a descriptor opened once stays right for as
# long as we hold it (even if prune deletes the name). Restoring many small files reads many
# blobs from few packs: keeping a few descriptors open per thread saves an open and a close
# per blob.
_CACHED_PREFIX = "data/"
_FDS_PER_THREAD = 16


class _FdCache:
    """Keyed by object name: a hit builds no path (pathlib cost ~40 µs per read of a tree
    blob in ``check``, a fifth of reading it)."""

    def __init__(self) -> None:
        self.fds: OrderedDict[str, int] = OrderedDict()

    def get(self, name: str, path: Callable[[str], Path]) -> int:
        fd = self.fds.get(name)
        if fd is not None:
            self.fds.move_to_end(name)
            return fd
        fd = os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
        self.fds[name] = fd
        if len(self.fds) > _FDS_PER_THREAD:
            os.close(self.fds.popitem(last=False)[1])
        return fd

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.popitem()[1])

    def __del__(self) -> None:  # the thread that owned it has ended
        self.close()


def _scan(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        raise  # the prefix names nothing: an empty listing (or a directory just pruned)
    except OSError as e:
        raise StorageError(f"cannot list {directory}: {reason(e)}") from e


class LocalBackend(BackendDefaults):
    capabilities = Capabilities(temporary_files=True)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root)
        self._local = threading.local()

    def _cached_fd(self, name: str) -> int:
        cache: _FdCache | None = getattr(self._local, "fds", None)
        if cache is None:
            cache = self._local.fds = _FdCache()
        return cache.get(name, self._path)  # a name is checked before it is first opened

    @property
    def location(self) -> str:
        return str(self._root)

    def _path(self, name: str) -> Path:
        check_name(name)
        return self._root / name

    @staticmethod
    def _not_an_object(e: OSError) -> bool:
        # A directory of the layout, or a path through an object, is "no such object".
        return isinstance(e, FileNotFoundError | IsADirectoryError | NotADirectoryError)

    @staticmethod
    def _write_error(path: Path, e: OSError, hint: str = "") -> StorageError:
        return StorageError(f"cannot write {path}: {reason(e)}{hint}")

    def _write_temp(self, path: Path, data: Buffer) -> Path:
        """``data`` in a new temporary file next to ``path``, fsynced; on any failure the
        temporary file is removed again (a full disk must not fill up with them)."""

        return self._write_temp_with(path, lambda fd: _write_all(fd, data))

    def _write_temp_with(self, path: Path, write: Callable[[int], None]) -> Path:
        try:
            make_dirs(path.parent)
            tmp = path.parent / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        except OSError as e:
            raise self._write_error(path, e) from e
        try:
            try:
                write(fd)
                os.fsync(fd)
            finally:
                os.close(fd)  # may report a delayed write error (NFS): still a failure
        except BaseException as e:
            unlink_quietly(tmp)
            if isinstance(e, OSError):
                raise self._write_error(path, e) from e
            raise
        return tmp

    def _fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def put(self, name: str, data: Buffer) -> None:
        path = self._path(name)
        self._rename_in(path, self._write_temp(path, data))

    def put_file(self, name: str, fd: int, size: int) -> None:
        """Copied in the kernel (``copy_file_range``): no page of it passes through this
        process, so a backup's peak memory holds none of the pack it stores."""
        path = self._path(name)
        self._rename_in(path, self._write_temp_with(path, lambda out: _copy(fd, out, size)))

    def _rename_in(self, path: Path, tmp: Path) -> None:
        try:
            os.replace(tmp, path)
            self._fsync_dir(path.parent)
        except BaseException as e:
            unlink_quietly(tmp)  # gone already if the rename happened
            if isinstance(e, OSError):
                raise self._write_error(path, e) from e
            raise

    def put_if_absent(self, name: str, data: Buffer) -> None:
        path = self._path(name)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)
            self._fsync_dir(path.parent)
        except FileExistsError as e:
            raise ObjectExists(f"object {name} already exists in {self._root}") from e
        except OSError as e:
            hint = ""
            if e.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                hint = " (exclusive writes need hard links; this file system may not allow them)"
            raise self._write_error(path, e, hint) from e
        finally:
            unlink_quietly(tmp)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            if length is None:
                with open(self._path(name), "rb", buffering=0) as f:
                    f.seek(offset)
                    return f.read()
            if name.startswith(_CACHED_PREFIX):
                data = os.pread(self._cached_fd(name), length, offset)
            else:
                fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    data = os.pread(fd, length, offset)
                finally:
                    os.close(fd)
        except OSError as e:
            if self._not_an_object(e):
                raise ObjectNotFound(f"object {name} not found in {self._root}") from e
            raise StorageError(f"cannot read {self._root / name}: {reason(e)}") from e
        if len(data) != length:
            raise StorageError(
                f"short read of {self._root / name}: wanted {length} bytes at {offset}, "
                f"got {len(data)}"
            )
        return data

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk the deepest directory the prefix names, then filter by the full prefix.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if base:
            check_name(base)  # no "..", no absolute prefix: never list outside the root
        start = self._root / base if base else self._root
        try:
            yield from self._walk(start, base, prefix)
        except (FileNotFoundError, NotADirectoryError):
            return

    def _walk(self, directory: Path, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        for entry in _scan(directory):
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name.startswith(_TMP_PREFIX):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                size = None if is_dir else entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue  # deleted while we listed
            except OSError as e:
                raise StorageError(f"cannot list {entry.path}: {reason(e)}") from e
            if is_dir:
                if name.startswith(prefix) or prefix.startswith(name + "/"):
                    try:
                        yield from self._walk(Path(entry.path), name, prefix)
                    except (FileNotFoundError, NotADirectoryError):
                        continue
            elif name.startswith(prefix) and size is not None:
                yield ObjectInfo(name, size)

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            if path.is_dir():
                return
            path.unlink()
        except OSError as e:
            if self._not_an_object(e):
                return
            raise StorageError(f"cannot delete {path}: {reason(e)}") from e

    def stat(self, name: str) -> ObjectInfo:
        path = self._path(name)
        try:
            st = path.stat()
        except OSError as e:
            if self._not_an_object(e):
                raise ObjectNotFound(f"object {name} not found in {self._root}") from e
            raise StorageError(f"cannot stat {path}: {reason(e)}") from e
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"object {name} not found in {self._root}")
        return ObjectInfo(name, st.st_size)

    # ---- temporary files ----------------------------------------------------------------

    def list_temporary(self) -> Sequence[TemporaryFile]:
        """Every ``.tmp-*`` file under the repository, wherever a write left it."""
        found: list[TemporaryFile] = []
        pending = [(self._root, "")]
        while pending:
            directory, rel = pending.pop()
            try:
                entries = _scan(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append((Path(entry.path), name))
                    elif entry.name.startswith(_TMP_PREFIX):
                        st = entry.stat(follow_symlinks=False)
                        found.append(TemporaryFile(name, st.st_size, st.st_mtime))
                except FileNotFoundError:
                    continue  # a write finished (renamed) or failed (removed) meanwhile
                except OSError as e:
                    raise StorageError(f"cannot list {entry.path}: {reason(e)}") from e
        return found

    def remove_temporary(self, name: str) -> None:
        """Remove the temporary file ``name`` (as ``list_temporary`` gives it); already gone
        is fine. Anything else, an object above all, is refused with ``ValueError``."""
        path = self._path(name)
        if not path.name.startswith(_TMP_PREFIX):
            raise ValueError(f"{name} is not a temporary file")
        try:
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{name} is not a temporary file")
            path.unlink()
        except OSError as e:
            if self._not_an_object(e):
                return
            raise StorageError(f"cannot remove {path}: {reason(e)}") from e

    def close(self) -> None:
        cache: _FdCache | None = getattr(self._local, "fds", None)
        if cache is not None:
            cache.close()


_COPY_PIECE = 1 << 20


def _copy(src: int, dst: int, size: int) -> None:
    """The first ``size`` bytes of ``src`` to ``dst``'s offset; ``OSError`` if ``src`` is
    shorter. ``copy_file_range`` where the kernel and file systems have it, else reads."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src, dst, size - done, done)
            if n == 0:
                raise OSError(0, f"the file to store is shorter than {size} bytes")
            done += n
        return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    except AttributeError:  # not Linux
        pass
    while done < size:
        piece = os.pread(src, min(_COPY_PIECE, size - done), done)
        if not piece:
            raise OSError(0, f"the file to store is shorter than {size} bytes")
        _write_all(dst, piece)
        done += len(piece)


def _write_all(fd: int, data: Buffer) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
