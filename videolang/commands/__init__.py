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
