"""The ``imagery`` command line: thin parsing over ``evolve.session``.

Every user-facing failure is one line on stderr and exit code 2, with nothing stored changed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from spark_runtime.spark import one_line
from ui import commands

DEFAULT_STORE = "imagery-data"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + message
        hint = f" (see '{self.prog} --help')" if " " in self.prog else ""
        self.exit(2, f"imagery: error: {message}{hint}\n")


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):  # NaN fails the first test
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def _store_folder(text: str) -> str:
    if "://" in text:
        raise argparse.ArgumentTypeError(f"the store is a local folder, got {text!r}: put the objects behind a URL with --objects")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imagery", description="Evolve images with people in the loop.")
    parser.add_argument("--store", type=_store_folder, default=os.environ.get("IMAGERY_STORE", DEFAULT_STORE), help="store folder (default ./imagery-data or $IMAGERY_STORE)")
    parser.add_argument("--db", default=os.environ.get("IMAGERY_DB") or None, help="database URL (default: SQLite in the store folder; or $IMAGERY_DB)")
    parser.add_argument("--objects", default=os.environ.get("IMAGERY_OBJECTS") or None, help="where image objects go: a folder or an fsspec URL, e.g. shared storage for a cluster (default: objects/ in the store folder; or $IMAGERY_OBJECTS)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("new", help="create a run and render generation 0; prints the run id")
    p.add_argument("--generator", default="cppn")
    p.add_argument("--population", type=_whole_number, default=16)
    p.add_argument("--size", type=_whole_number, default=256)
    p.add_argument("--seed", type=_whole_number, default=1)
    p.add_argument("--name")
    p.add_argument("--strength", type=float, help="mutation strength 0..1")
    p.add_argument("--color", choices=["rgb", "hsv"], help="CPPN colour space")
    p.add_argument("--model", help="diffusion: local diffusers folder, FILE.safetensors, or 'tiny'")
    p.add_argument("--model-config", help="diffusion: local config folder for a single-file checkpoint")
    p.add_argument("--prompt", help="diffusion: prompt")
    p.add_argument("--negative", help="diffusion: negative prompt")
    p.add_argument("--init-image", action="append", metavar="FILE", help="diffusion: start from this image via img2img (repeatable)")
    p.add_argument("--init-from", metavar="RUN@GEN", help="diffusion: start from a generation of another run (its picks, else all)")

    p = sub.add_parser("run", help="headless batch run with an automatic fitness")
    p.add_argument("run")
    p.add_argument("--generations", type=_whole_number, required=True)
    p.add_argument("--fitness", default="novelty", help="novelty | target:IMAGE.png | preference:RUN")
    p.add_argument("--sparks", default=os.environ.get("IMAGERY_SPARKS", "local"), help="where images render: local | process:N | ray | ray:ADDRESS (default local, or $IMAGERY_SPARKS)")

    p = sub.add_parser("rate", help="score candidates of the branch head (or of RUN@GEN): INDEX=SCORE (0..5) or INDEX=clear")
    p.add_argument("run")
    p.add_argument("ratings", nargs="+")

    p = sub.add_parser("evolve", help="tell the ratings, make and store the next generation")
    p.add_argument("run")
    p.add_argument("--strength", type=float, help="mutation strength 0..1 from now on")
    p.add_argument("--lock", action="append", help="gene group to keep unchanged (repeatable)")
    p.add_argument("--unlock", action="store_true", help="clear all gene locks")

    p = sub.add_parser("undo", help="move the branch head back one generation (nothing is deleted)")
    p.add_argument("run")

    p = sub.add_parser("fork", help="new branch from a generation: RUN@GEN or RUN:BRANCH@GEN")
    p.add_argument("ref")
    p.add_argument("--name", required=True)

    p = sub.add_parser("status", help="runs, branches, generations, ratings")
    p.add_argument("run", nargs="?")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help="PNGs with genome and lineage embedded")
    p.add_argument("ref")
    p.add_argument("dir")

    p = sub.add_parser("rerender", help="render an exported PNG again from its embedded genome")
    p.add_argument("png")
    p.add_argument("out")
    p.add_argument("--size", type=_whole_number)

    p = sub.add_parser("ui", help="the browser rating UI (default http://127.0.0.1:7860)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; anything but loopback needs --auth or --auth-file",
    )
    p.add_argument("--port", type=_whole_number, default=7860)
    p.add_argument("--sparks", default=os.environ.get("IMAGERY_SPARKS", "local"), help="where images render, one spark per browser session: local | process:N | ray | ray:ADDRESS")
    p.add_argument("--spark-idle", type=_seconds, default=600.0, metavar="SECONDS", help="a session's spark is released after this long without a render (default 600)")
    p.add_argument("--auth", metavar="USER:PASS", help="require HTTP basic authentication")
    p.add_argument(
        "--auth-file", metavar="FILE", help="file of USER:PASS lines for HTTP basic authentication"
    )

    p = sub.add_parser("db", help="database maintenance")
    db = p.add_subparsers(dest="db_command", required=True, parser_class=_Parser)
    db.add_parser("upgrade", help="migrate the database (--db, or the store's SQLite file) to the newest schema")

    p = sub.add_parser("gc", help="remove objects no branch can reach")
    p.add_argument("--grace", type=_seconds, default=0.0, help="keep unreachable objects younger than this many seconds")

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: Any = commands.dispatch(args)
    except commands.USER_ERRORS as exc:
        print(f"imagery: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imagery: interrupted; the last committed generation is intact", file=sys.stderr)
        return 130
    if isinstance(result, (dict, list)):
        print(json.dumps(result, indent=2, sort_keys=True))
    elif result is not None:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
