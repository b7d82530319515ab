"""CLI surface: every command and subcommand documents an example; bad input is one line, exit 2."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from videolang.cli import build_parser, main


def _walk(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, prefix + (name,))


ALL = [p for p, _ in _walk(build_parser())]


def test_commands_are_listed():
    names = {p[0] for p in ALL if p}
    assert {"demo", "synth", "manifest"} <= names


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "videolang")
def test_help_has_example(path, capsys):
    with pytest.raises(SystemExit) as info:
        main(list(path) + ["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out.lower() and "videolang " in out.split("example", 1)[1]


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "videolang", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("videolang ")


def test_bad_input_is_one_line_not_a_traceback(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "videolang", "manifest", "stats", str(tmp_path / "missing.jsonl")],
        capture_output=True, text=True,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "manifest not found" in lines[0] and "Traceback" not in res.stderr


def test_argument_errors_are_one_line():
    res = subprocess.run([sys.executable, "-m", "videolang", "synth", "--out", "x", "--videos", "abc"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid int value: 'abc'" in lines[0] and lines[0].startswith("videolang synth: error:")
