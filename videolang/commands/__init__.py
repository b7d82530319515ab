"""One module per CLI command; each exposes `add_parser(subparsers)` and keeps heavy imports lazy."""

import argparse


def command_parser(sub, name: str, help: str, example: str, description: str | None = None):
    """A subparser whose --help always ends with a runnable example."""
    return sub.add_parser(
        name,
        help=help,
        description=description or help,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` and repeatable `--set section.key=value` overrides."""
    parser.add_argument("--config", help="YAML config file (default: built-in defaults)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.max_steps=100 (repeatable)",
    )


def config_from_args(args: argparse.Namespace):
    from videolang.config import load_config

    return load_config(args.config, args.overrides)
