"""The ``drengine`` entry point: global options, command registration, error mapping."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sqlite3
import sys
import traceback
from typing import NoReturn

import typer

from drengine import __version__
from drengine.cli.state import STATE, parse_duration_seconds
from drengine.core.cache_dir import cache_root
from drengine.core.errors import DrengineError, OutputClosed

app = typer.Typer(
    name="drengine",
    help="Backup and disaster recovery: deduplicated, compressed, encrypted, verified.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help text, as click prints it: rich's boxes cost start-up time on every --help.
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"drengine {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    repo: str = typer.Option(
        "", "--repo", "-r", help="Repository URL or path (env DRENGINE_REPOSITORY)."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
    retry_lock: str = typer.Option(
        "0", "--retry-lock", help="Wait this long (90s, 5m) for a conflicting lock to go."
    ),
    s3_endpoint: str = typer.Option(
        "", "--s3-endpoint", help="S3-compatible endpoint URL (env AWS_ENDPOINT_URL)."
    ),
    s3_region: str = typer.Option("", "--s3-region", help="S3 region (env AWS_DEFAULT_REGION)."),
    s3_storage_class: str = typer.Option(
        "", "--s3-storage-class", help="Storage class of new objects (STANDARD_IA, ...)."
    ),
    s3_sse: str = typer.Option("", "--s3-sse", help="Server-side encryption: AES256 or aws:kms."),
    s3_sse_kms_key_id: str = typer.Option("", "--s3-sse-kms-key-id", help="KMS key for aws:kms."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    from drengine.core.memory import tune_allocator

    tune_allocator()  # before any command starts its threads
    STATE.repo_url = repo
    STATE.debug = debug
    STATE.retry_lock = parse_duration_seconds(retry_lock)
    # The S3 flags lie over the DRENGINE_S3_* environment when a backend is opened
    # (``state.s3_options``); the process environment is never written.
    STATE.s3_flags = {
        "endpoint_url": s3_endpoint,
        "region": s3_region,
        "storage_class": s3_storage_class,
        "sse": s3_sse,
        "sse_kms_key_id": s3_sse_kms_key_id,
    }
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="drengine: %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if debug:
        # boto's debug output is huge and carries request signatures: keep it out of --debug.
        for name in ("botocore", "boto3", "urllib3", "s3transfer"):
            logging.getLogger(name).setLevel(logging.INFO)


# Every command's module, in the order ``--help`` lists them; ``cmd_NAME`` adds ``NAME``.
COMMANDS = (
    "backup",
    "check",
    "copy",
    "daemon",
    "drill",
    "dump",
    "forget",
    "init",
    "key",
    "ls",
    "policy",
    "prune",
    "repair",
    "report",
    "restore",
    "run",
    "snapshots",
    "status",
    "unlock",
)
# Global options that take a value (``_global``): what comes after them is not a command.
_VALUED = {"-r", "--repo", "--retry-lock", "--s3-endpoint", "--s3-region"}
_VALUED |= {"--s3-storage-class", "--s3-sse", "--s3-sse-kms-key-id"}


def command_named(args: list[str]) -> str | None:
    """The command an argument list runs, if it names one of ``COMMANDS``."""
    it = iter(args)
    for arg in it:
        if arg.startswith("-"):
            if arg in _VALUED:
                next(it, None)
            continue
        return arg if arg in COMMANDS else None
    return None


def register_commands(args: list[str] | None = None) -> None:
    """Import the command ``args`` run, or every command (``--help``, an unknown name, or
    no ``args``: a caller invoking ``app`` itself). One command's module instead of all
    of them takes about a tenth of a second off every run on the project's VM."""
    name = command_named(args) if args is not None else None
    if name is None and args is not None and "--version" in args:
        return  # eager: it prints and exits before any command
    for command in (name,) if name else COMMANDS:
        importlib.import_module(f"drengine.cli.cmd_{command}")


def _is_click_exception(e: BaseException) -> bool:
    # typer vendors its own click; match by class name rather than a private import.
    return any(c.__name__ == "ClickException" for c in type(e).__mro__)


def _terminate(signum: int, frame: object) -> None:
    # cron, systemd and the daemon stop us with SIGTERM: unwind like Ctrl-C, so a backup
    # indexes what it uploaded and temporary files are removed.
    raise KeyboardInterrupt


EXIT_PIPE = OutputClosed.exit_code
EXIT_INTERRUPTED = 130  # 128 + SIGINT


def _fail(message: str, code: int) -> NoReturn:
    if STATE.debug:  # the traceback as well, but never a different exit code
        traceback.print_exc()
    print(f"drengine: error: {message}", file=sys.stderr)
    sys.exit(code)


def _library_error(e: BaseException) -> str | None:
    """One sentence for errors of the libraries and the OS that reached the top."""
    if isinstance(e, MemoryError):
        return "out of memory (a smaller --pack-size or fewer parallel jobs may help)"
    if isinstance(e, sqlite3.Error):
        return f"a local database of drengine failed: {e} (in {cache_root()})"
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        return f"{where}{e.strerror or e}"
    return None


def _quiet_stdout() -> None:
    # Later flushes of stdout (at exit) must not raise again into a closed pipe.
    with contextlib.suppress(OSError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    register_commands(sys.argv[1:])
    try:
        rc = app(standalone_mode=False)
        if rc == EXIT_INTERRUPTED:  # typer turns Ctrl-C (and our SIGTERM) into this, silently
            print("drengine: error: interrupted", file=sys.stderr)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        sys.exit(rc if isinstance(rc, int) else 0)
    except OutputClosed:
        _quiet_stdout()
        sys.exit(EXIT_PIPE)
    except DrengineError as e:
        _fail(str(e), e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        _fail("aborted", EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        _fail("interrupted", EXIT_INTERRUPTED)
    except BrokenPipeError:
        # The reader of our output went away (``dump ... | head``): stop quietly, as `cat`
        # does when SIGPIPE ends it.
        _quiet_stdout()
        sys.exit(EXIT_PIPE)
    except Exception as e:  # click's usage errors, library errors, anything unexpected
        if _is_click_exception(e):
            msg = e.format_message()  # type: ignore[attr-defined]
            if msg:  # empty when click already printed the help (no arguments given)
                print(f"drengine: error: {msg} (see --help)", file=sys.stderr)
            sys.exit(2)
        known = _library_error(e)
        if known is not None:
            _fail(known, 1)
        _fail(f"unexpected {type(e).__name__}: {e} (run with --debug)", 1)
