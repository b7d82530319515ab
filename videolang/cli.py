"""`videolang` command line: one module per command under `videolang/commands/`, listed explicitly.

Command modules keep heavy imports (torch, decoders) inside their `run` so `--help` stays instant.
Errors caused by input (`VideolangError`) print one line and exit 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from videolang import __version__
from videolang.errors import VideolangError

# (command name, module) in the order `--help` shows them.
COMMANDS = [
    ("demo", "videolang.commands.demo"),
    ("synth", "videolang.commands.synth"),
    ("manifest", "videolang.commands.manifest"),
    ("train", "videolang.commands.train"),
    ("eval", "videolang.commands.eval"),
    ("export", "videolang.commands.export"),
    ("extract", "videolang.commands.extract"),
    ("curate", "videolang.commands.curate"),
]

EPILOG = """examples:
  videolang demo --out runs/demo
  videolang synth --out data/synth --videos 20 --seed 0
  videolang manifest validate data/synth/manifest.jsonl --check-files
  videolang train configs/smoke.yaml --set data.manifest=data/synth/manifest.jsonl
  torchrun --nproc_per_node 2 -m videolang train configs/smoke.yaml --set data.manifest=...
"""


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (`videolang CMD: error: ...`, exit 2) instead of a usage block;
    subparsers inherit the class, so every command behaves the same."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="videolang",
        description="Video-language pretraining framework.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"videolang {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, module in COMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def _drop_launcher_args(argv: list[str]) -> list[str]:
    """The `deepspeed` launcher puts `--local_rank=N` before the command; the rank is in LOCAL_RANK too."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith(("--local_rank=", "--local-rank=")):
            continue
        if arg in ("--local_rank", "--local-rank") and i + 1 < len(argv):
            skip = True
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_drop_launcher_args(sys.argv[1:] if argv is None else list(argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except VideolangError as e:
        print(f"videolang {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"videolang {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
