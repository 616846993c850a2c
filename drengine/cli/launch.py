"""The console entry point. ``drengine --version`` answers before typer and the command
table are imported (~0.08 s of a ~0.25 s start here); everything else goes to
``cli.main``, which prints the same line for ``--version`` among other options."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from drengine import __version__

        sys.stdout.write(f"drengine {__version__}\n")
        return
    from drengine.cli.main import main as run

    run()
