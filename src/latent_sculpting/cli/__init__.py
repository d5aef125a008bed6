"""The ``sculpt`` command line.

Each sub-command lives in its own module of this package with two functions:
``register(subparsers)`` adds its parser, ``run(args) -> int`` carries it out. Flags map
one-to-one to estimator arguments where they set one.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from collections.abc import Iterator, Sequence

from latent_sculpting import __version__

#: Sub-command modules, in the order ``sculpt --help`` lists them.
COMMANDS = (
    "reproduce",
    "train",
    "score",
    "incidents",
    "serve",
    "watch",
    "adapt",
    "extract",
    "export",
    "report",
    "benchmark",
    "compare",
    "sweep",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sculpt",
        description="Zero-day attack detection in network flows with latent sculpting "
        "(Chhetri et al., arXiv:2512.22179).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        sub = module.register(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sculpt`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        # Building the parser imports every command's module, torch among them: the first
        # seconds of any command. A Ctrl-C there is an interruption like any other.
        parser = build_parser()
    except KeyboardInterrupt:
        command = next((arg for arg in argv if arg in COMMANDS), None)
        print(
            f"sculpt {command}: interrupted" if command else "sculpt: interrupted", file=sys.stderr
        )
        return 130
    args = parser.parse_args(argv)
    try:
        with report_warnings(args.command):
            return int(args._run(args) or 0)
    except (ValueError, OSError) as error:
        # Bad input (a damaged model file is a ModelFileError, a ValueError) is the user's to
        # fix, and so is a file the system will not read or write (missing, no permission, a
        # full disk): say what is wrong, without a traceback.
        print(f"sculpt {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sculpt {args.command}: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def report_warnings(command: str) -> Iterator[None]:
    """Print the library's logged warnings (``latent_sculpting.*`` loggers: an exploded training
    epoch, say) on stderr as ``sculpt COMMAND: warning: ...``, the form of the command's own."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter(f"sculpt {command}: warning: %(message)s"))
    package = logging.getLogger("latent_sculpting")
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
