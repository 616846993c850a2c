"""``drengine backup PATH... [--source URL...]``: back up files, databases, devices, streams."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import typer

from drengine.cli.main import app
from drengine.cli.render import err_console, human_bytes, print_json, show_progress
from drengine.cli.state import open_repository
from drengine.core.errors import UsageError
from drengine.core.progress import Progress

if TYPE_CHECKING:
    from drengine.sources.excludes import Excluder, ExcludeRules

EXIT_PARTIAL = 3


def _warn(msg: str) -> None:
    err_console.print(f"warning: {msg}", markup=False)


def _scan_totals(paths: list[str], ex: Excluder, p: Progress, stop: threading.Event) -> None:
    """Count what lies ahead so progress can show an ETA, leaving out what is excluded.
    Iterative (trees may be thousands of levels deep); a failure only loses the ETA."""
    stack = [os.path.abspath(os.fsencode(top)) for top in paths]
    try:
        while stack and not stop.is_set():
            root = stack.pop()
            try:
                with os.scandir(root) as it:
                    entries = list(it)
            except OSError:
                continue
            kept = ex.dir_kept(root, [e.name for e in entries]) if ex.has_dir_rules else None
            for e in entries:
                if (kept is not None and e.name not in kept) or ex.path_excluded(e.path):
                    continue
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                        p.files_total += 1
                        continue
                    size = e.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
                if not ex.size_excluded(size):
                    p.bytes_total += size
                    p.files_total += 1
    except Exception:  # the estimate is a nicety: never a traceback on the terminal
        return
    p.total_known = not stack


def _rules(
    exclude: list[str],
    iexclude: list[str],
    exclude_file: list[str],
    iexclude_file: list[str],
    exclude_caches: bool,
    exclude_if_present: list[str],
    exclude_larger_than: str,
) -> ExcludeRules:
    # As restic: the patterns of the files come after those of the command line.
    from drengine.sources.excludes import ExcludeRules, parse_size, read_exclude_file

    patterns = [*exclude]
    for f in exclude_file:
        patterns += read_exclude_file(f, "--exclude-file")
    ipatterns = [*iexclude]
    for f in iexclude_file:
        ipatterns += read_exclude_file(f, "--iexclude-file")
    return ExcludeRules(
        patterns=tuple(patterns),
        ipatterns=tuple(ipatterns),
        exclude_caches=exclude_caches,
        if_present=tuple(exclude_if_present),
        larger_than=parse_size(exclude_larger_than) if exclude_larger_than else None,
    )


def _paths(
    args: list[str], files_from: list[str], verbatim: list[str], raw: list[str]
) -> list[str]:
    from drengine.sources.excludes import (
        read_files_from,
        read_files_from_raw,
        read_files_from_verbatim,
    )

    paths: list[str] = []
    for f in files_from:
        paths += read_files_from(f, warn=_warn)
    for f in verbatim:
        paths += read_files_from_verbatim(f)
    for f in raw:
        paths += read_files_from_raw(f)
    paths += args
    if not paths:
        if files_from or verbatim or raw:
            raise UsageError(
                "nothing to back up: no PATH given and the --files-from lists name none"
            )
        raise UsageError("nothing to back up: give one or more PATHs, or --files-from FILE")
    return paths


@app.command()
def backup(
    paths: list[str] | None = typer.Argument(
        None, help="Files and directories to back up (optional with --files-from*)."
    ),
    exclude: list[str] = typer.Option(
        [], "--exclude", "-e", help="Exclude paths matching PATTERN (repeatable)."
    ),
    iexclude: list[str] = typer.Option(
        [], "--iexclude", help="Like --exclude, ignoring case (repeatable)."
    ),
    exclude_file: list[str] = typer.Option(
        [], "--exclude-file", help="Read --exclude patterns from FILE (repeatable)."
    ),
    iexclude_file: list[str] = typer.Option(
        [], "--iexclude-file", help="Read --iexclude patterns from FILE (repeatable)."
    ),
    exclude_caches: bool = typer.Option(
        False,
        "--exclude-caches",
        help="Exclude the contents of directories with a valid CACHEDIR.TAG (kept itself).",
    ),
    exclude_if_present: list[str] = typer.Option(
        [],
        "--exclude-if-present",
        help="NAME[:HEADER]: exclude the contents of directories holding NAME (kept itself), "
        "if it starts with HEADER when given (repeatable).",
    ),
    exclude_larger_than: str = typer.Option(
        "", "--exclude-larger-than", help="Exclude files larger than SIZE (1k, 2M, 3G, 4T)."
    ),
    files_from: list[str] = typer.Option(
        [], "--files-from", help="Read paths or glob patterns, one a line, from FILE or -."
    ),
    files_from_verbatim: list[str] = typer.Option(
        [], "--files-from-verbatim", help="Read literal paths, one a line, from FILE or -."
    ),
    files_from_raw: list[str] = typer.Option(
        [], "--files-from-raw", help="Read NUL-terminated literal paths from FILE or -."
    ),
    one_file_system: bool = typer.Option(
        False, "--one-file-system", "-x", help="Do not cross file-system boundaries."
    ),
    source: list[str] = typer.Option(
        [],
        "--source",
        help="Back up a database, device or image: postgresql://…, mysql://…, sqlite:///PATH, "
        "block:///dev/… (repeatable; see docs/sources.md).",
    ),
    stdin: bool = typer.Option(False, "--stdin", help="Back up what is piped to standard input."),
    stdin_filename: str = typer.Option(
        "stdin", "--stdin-filename", help="Name of the stream in the snapshot (--stdin*)."
    ),
    stdin_from_command: bool = typer.Option(
        False,
        "--stdin-from-command",
        help="Back up the output of the command given after --; its exit status is checked.",
    ),
    before: list[str] = typer.Option(
        [], "--before", help="Shell command to run first; if it fails, nothing is backed up."
    ),
    after: list[str] = typer.Option(
        [], "--after", help="Shell command to run afterwards, also when the backup failed."
    ),
    tag: list[str] = typer.Option([], "--tag", help="Tag the snapshot (repeatable)."),
    host: str = typer.Option("", "--host", help="Host name to record (default: this host)."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Back up PATHs into a new snapshot."""
    from drengine.engine.backup import BackupOptions, run_backup
    from drengine.sources.base import Source
    from drengine.sources.command import CommandSource, StdinSource
    from drengine.sources.excludes import Excluder
    from drengine.sources.files import FileSource
    from drengine.sources.urls import source_from_url

    # Every option is checked before the repository is opened: a typo costs no password.
    rules = _rules(
        exclude,
        iexclude,
        exclude_file,
        iexclude_file,
        exclude_caches,
        exclude_if_present,
        exclude_larger_than,
    )
    excluder = Excluder(rules)  # compiles the patterns: a malformed one is a usage error
    command = list(paths or []) if stdin_from_command else []
    args = [] if stdin_from_command else list(paths or [])
    streams: list[Source] = [source_from_url(u) for u in source]
    if stdin and stdin_from_command:
        raise UsageError("--stdin and --stdin-from-command exclude each other")
    if stdin:
        streams.append(StdinSource(stdin_filename))
    if stdin_from_command:
        streams.append(CommandSource(command, stdin_filename))
    given_files = args or files_from or files_from_verbatim or files_from_raw
    targets = (
        _paths(args, files_from, files_from_verbatim, files_from_raw)
        if given_files or not streams
        else []
    )
    sources: list[Source] = [FileSource(targets, rules, one_file_system)] if targets else []
    repo = open_repository()
    opts = BackupOptions(
        sources=sources + streams,
        tags=tag,
        host=host or None,
        before=before,
        after=after,
    )
    progress = Progress()
    stop = threading.Event()
    if err_console.is_terminal and not json_out and targets:
        threading.Thread(
            target=_scan_totals, args=(targets, excluder, progress, stop), daemon=True
        ).start()
    try:
        with show_progress(progress, enabled=not json_out):
            result = run_backup(repo, opts, progress)
    finally:
        stop.set()
    snap, s = result.snapshot, result.snapshot.summary
    for err in result.errors:
        err_console.print(f"warning: {err['path']}: {err['error']}", markup=False)
    if json_out:
        print_json({"snapshot_id": snap.id, "short_id": snap.id[:8], **s})
    else:
        files = (
            f"{s['files_total']} files ({s['files_new']} new, {s['files_changed']} changed, "
            f"{s['files_unmodified']} unmodified), {s['dirs_total']} dirs, "
            if "files_total" in s
            else ""
        )
        typer.echo(
            f"snapshot {snap.id[:8]} saved: {snap.kind}: {files}"
            f"{human_bytes(s['bytes_total'])} read, {human_bytes(s['bytes_new'])} new, "
            f"{human_bytes(s['bytes_stored'])} stored, in {s['duration_seconds']:.1f} s"
        )
    if result.partial:
        err_console.print(
            f"{len(result.errors)} inputs could not be read; they are listed in the snapshot",
            markup=False,
        )
        raise typer.Exit(EXIT_PARTIAL)
