"""`blockfl miner` and `blockfl device` take the field flags of their role's config sections
only (`ROLE_SECTIONS`); `--config` and `--set` still reach every field, and no section left out
of a role changes the protocol spec that the role checks against the chain."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from blockfl.cli import build_parser
from blockfl.config import ROLE_SECTIONS, Config
from blockfl.protocol import Genesis, ProtocolSpec

SECTIONS = [f.name for f in fields(Config)]


def parse(*argv: str):
    return build_parser(argv[0]).parse_args(list(argv))


REQUIRED = {"miner": ["--key", "dev:1"],
            "device": ["--key", "dev:1", "--miners", "http://127.0.0.1:1", "--shard", "0"]}


@pytest.mark.parametrize(("role", "required"), REQUIRED.items())
def test_a_node_command_takes_only_its_roles_field_flags(role, required, capsys):
    taken = ROLE_SECTIONS[role]
    for section in SECTIONS:
        item = fields(getattr(Config(), section))[0].name
        flag = f"--{section}-{item}".replace("_", "-")
        if section in taken:
            assert getattr(parse(role, *required, flag, "1"), f"cfg__{section}__{item}") == "1"
        else:
            with pytest.raises(SystemExit) as exit_:
                parse(role, *required, flag, "1")
            assert exit_.value.code == 2 and flag in capsys.readouterr().err
            # the escape hatch: any field by --set (or in the --config file)
            assert parse(role, *required, "--set", f"{section}.{item}=1").cfg_set == [
                f"{section}.{item}=1"]
    assert set(ROLE_SECTIONS["miner"]) < set(SECTIONS)
    assert {"task", "data", "model"}.isdisjoint(ROLE_SECTIONS["miner"])  # a miner runs no task
    assert {"server", "links", "malfunction"}.isdisjoint(ROLE_SECTIONS["device"])


def _other(value):
    """A different value of the same type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return (*value, 1.0)
    return value


@pytest.mark.parametrize("role", list(ROLE_SECTIONS))
def test_no_section_left_out_of_a_role_changes_the_spec_it_checks(role):
    """Every field of a section a role does not take can differ between nodes without
    changing the protocol spec (hash) that the node derives and checks against the chain."""
    genesis = Genesis("none", b"\0" * 32, {})
    base = Config()
    spec = ProtocolSpec.from_config(base, genesis).hash()
    for section in set(SECTIONS) - set(ROLE_SECTIONS[role]):
        values = getattr(base, section)
        for item in fields(values):
            changed = replace(values, **{item.name: _other(getattr(values, item.name))})
            config = replace(base, **{section: changed})
            assert ProtocolSpec.from_config(config, genesis).hash() == spec, (section, item.name)
