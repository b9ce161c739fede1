"""`blockfl --help` answers at once: parsing a command imports only that command's module, and
no command module imports torch, web3 or FastAPI before the command runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from blockfl.cli import COMMANDS, build_parser, main

HEAVY = ("torch", "web3", "fastapi", "uvicorn", "matplotlib", "scipy")

PROBE = """
import json, sys
from blockfl.cli import build_parser
build_parser(sys.argv[1])
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2:]))))
"""


def heavy_modules_after_parser(command: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, command, *HEAVY],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_parsing_a_command_imports_nothing_heavy(command):
    assert heavy_modules_after_parser(command) == set()


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    listing = capsys.readouterr().out
    for name, (_, text) in COMMANDS.items():
        assert name in listing and text in listing


def _subparser(parser, name):
    return parser._subparsers._group_actions[0].choices[name]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_command_run_gets_its_full_parser(command):
    # the module registered it (more than the listing's stub with only --help), and the full
    # parser registers every command of the table
    assert len(_subparser(build_parser(command), command)._actions) > 1
    assert len(_subparser(build_parser(""), command)._actions) == 1
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)
