"""What a newcomer tripped over: each mistake gets a one-line error that says what to do.

The chain tests use real anvil nodes; every message is the one the CLI prints.
"""

from __future__ import annotations

import argparse
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from blockfl.chain.deployment import Deployment
from blockfl.chain.node import ANVIL_MISSING, find_anvil, free_port, stop_pid
from blockfl.cli import build_parser, main
from blockfl.keys import parse_key

needs_anvil = pytest.mark.skipif(find_anvil() is None, reason="anvil not installed (npm ci)")


def blockfl(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the CLI; usage errors (argparse's exit 2) count as exit codes too."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@needs_anvil
def test_chain_up_on_a_taken_port_refuses_and_leaves_no_pid_file(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = blockfl(capsys, "chain", "up", "--detach", "--port", str(port),
                                 "--state-dir", str(tmp_path))
    assert code == 2 and f"port {port} on 127.0.0.1 is already in use" in err
    assert "anvil running" not in out
    assert not (tmp_path / "anvil.pid").exists()


@needs_anvil
def test_second_chain_up_refuses_and_deploy_finds_the_detached_node(tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    port = free_port()
    state = tmp_path / "state"
    code, out, _ = blockfl(capsys, "chain", "up", "--detach", "--port", str(port),
                           "--state-dir", str(state))
    assert code == 0 and f"http://127.0.0.1:{port}" in out
    pid = int((state / "anvil.pid").read_text())
    try:
        code, _, err = blockfl(capsys, "chain", "up", "--detach", "--port", str(free_port()),
                               "--state-dir", str(state))
        assert code == 2 and f"already runs (pid {pid}, http://127.0.0.1:{port})" in err
        assert int((state / "anvil.pid").read_text()) == pid  # not overwritten

        code, _, err = blockfl(capsys, "chain", "deploy", "--config", "network",
                               "--state-dir", str(state), "--out", "deployment.json")
        assert code == 0 and f"deploying to http://127.0.0.1:{port}" in err
        assert Deployment.read(Path("deployment.json")).rpc_url == f"http://127.0.0.1:{port}"
    finally:
        code, out, _ = blockfl(capsys, "chain", "down", "--state-dir", str(state))
    assert code == 0 and f"anvil (pid {pid}) stopped" in out
    stop_pid(pid)


@needs_anvil
def test_deploy_without_a_node_says_how_to_start_one(tmp_path, capsys):
    code, _, err = blockfl(capsys, "chain", "deploy", "--rpc-url",
                           f"http://127.0.0.1:{free_port()}", "--state-dir", str(tmp_path))
    assert code == 2 and "no Ethereum node answers" in err and "blockfl chain up" in err


def fake_deployment(tmp_path: Path, anvil_url: str, **changes: object) -> Path:
    """A deployment file for the session's anvil, with some fields changed."""
    deployment = Deployment(chain_id=31337, rpc_url=anvil_url,
                            contract="0x000000000000000000000000000000000000dEaD",
                            token="0x000000000000000000000000000000000000bEEF",
                            deployer="0x0", block_number=0, miners=[], parameters={})
    path = tmp_path / "deployment.json"
    replace(deployment, **changes).write(path)
    return path


def test_inspect_after_the_node_lost_its_state_names_the_missing_contract(anvil_url, tmp_path,
                                                                          capsys):
    path = fake_deployment(tmp_path, anvil_url)
    for sub in ("blocks", "rewards"):
        code, _, err = blockfl(capsys, "inspect", sub, "--deployment", str(path))
        assert code == 2 and "no contract at 0x000000000000000000000000000000000000dEaD" in err
        assert "Traceback" not in err


def test_a_deployment_of_another_chain_is_refused(anvil_url, tmp_path, capsys):
    path = fake_deployment(tmp_path, anvil_url, chain_id=1)
    code, _, err = blockfl(capsys, "inspect", "blocks", "--deployment", str(path))
    assert code == 2 and "runs chain 31337, the deployment chain 1" in err


def test_malformed_files_are_named(tmp_path, capsys):
    bad_json = tmp_path / "deployment.json"
    bad_json.write_text("{not json")
    code, _, err = blockfl(capsys, "inspect", "blocks", "--deployment", str(bad_json))
    assert code == 2 and f"{bad_json} is not a deployment file" in err
    bad_toml = tmp_path / "exp.toml"
    bad_toml.write_text("[run\nrounds = 3")
    code, _, err = blockfl(capsys, "simulate", "--config", str(bad_toml))
    assert code == 2 and f"{bad_toml} is not valid TOML" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["inspect", "model", "-1", "--file", "m.safetensors"], "a round is at least 0, got -1"),
    (["inspect", "updates", "-2"], "a round with a block is at least 1, got -2"),
    (["inspect", "blocks", "--from", "0"], "a round with a block is at least 1, got 0"),
    (["chain", "up", "--port", "99999"], "a port is at most 65535, got 99999"),
    (["explorer", "--port", "0"], "a port is at least 1, got 0"),
    (["model", "export", "-1", "--out", "m.safetensors"], "a round is at least 0, got -1"),
])
def test_bad_numbers_are_usage_errors_of_the_subcommand(argv, message, capsys):
    code, _, err = blockfl(capsys, *argv)
    assert code == 2 and message in err
    assert f"blockfl {argv[0]}" in err.splitlines()[-1]  # the subcommand's usage, not blockfl's


def test_dev_key_index_out_of_range():
    with pytest.raises(ValueError, match=r"dev:N with N from 0 to 2147483647"):
        parse_key("dev:99999999999999999999999")
    with pytest.raises(ValueError, match="dev:N"):
        parse_key("dev:one")
    assert len(parse_key("dev:2147483647")) == 32



@pytest.mark.parametrize(("argv", "usage"), [
    (["inspect", "blocks", "--jsn"], "usage: blockfl inspect blocks"),
    (["simulate", "--roundz", "3"], "usage: blockfl simulate"),
    (["network", "up", "--explorer-prot", "1"], "usage: blockfl network up"),
])
def test_a_flag_typo_shows_the_subcommands_usage(argv, usage, capsys):
    code, _, err = blockfl(capsys, *argv)
    assert code == 2 and err.startswith(usage)
    assert f"unrecognized arguments: {' '.join(argv[-2 if argv[-1].isdigit() else -1:])}" in err


def test_a_miner_on_a_taken_port_says_so_before_listening(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = blockfl(capsys, "miner", "--key", "dev:1", "--port", str(port))
    assert code == 2 and f"port {port} on 127.0.0.1 is already in use" in err
    assert "listening" not in out


def test_every_port_and_deployment_flag_has_help():
    parser = build_parser()
    pending, checked = [parser], 0
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif {"--port", "--deployment"} & set(action.option_strings):
                assert action.help, (current.prog, action.option_strings)
                checked += 1
    assert checked >= 8


def test_certificates_for_miners_on_other_hosts(tmp_path, capsys):
    from cryptography import x509

    code, out, _ = blockfl(capsys, "network", "certs", "--out", str(tmp_path), "--host",
                           "10.1.2.3", "--host", "miner.lan")
    assert code == 0 and "server.pem" in out
    cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"localhost", "miner.lan"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"127.0.0.1",
                                                                             "10.1.2.3"}


def test_help_shows_the_defaults_of_the_chosen_config(tmp_path, capsys):
    mine = tmp_path / "my.toml"
    mine.write_text("[network]\ndevices = 42\n[training]\nlr = 0.07\n")
    code, out, _ = blockfl(capsys, "simulate", "--config", str(mine), "--help")
    words = " ".join(out.split())
    assert code == 0
    assert "--network-devices INT default 42" in words
    assert "--training-lr FLOAT default 0.07" in words
    assert "--network-miners INT default 3" in words  # not in my.toml: the built-in value
    # help wraps long paths at their hyphens: compare without the white space
    assert f"thefielddefaultsshownare{mine}'s" in "".join(out.split())

    code, out, _ = blockfl(capsys, "simulate", "--help")
    assert code == 0 and "--network-devices INT default 10" in " ".join(out.split())
    assert "the field defaults shown are the built-in ones" in " ".join(out.split())


def test_help_of_a_command_with_a_packaged_config_shows_that_configs_defaults(capsys):
    code, out, _ = blockfl(capsys, "network", "up", "--help")
    words = " ".join(out.split())
    assert code == 0
    assert "--network-devices INT default 6" in words  # network.toml, not the built-in 10
    assert "--network-t-wait FLOAT default 10.0" in words
    assert "network.toml's" in words


def test_help_after_a_config_that_does_not_load_still_answers(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[run\n")
    code, out, _ = blockfl(capsys, "simulate", "--config", str(bad), "--help")
    assert code == 0 and "--network-devices INT default 10" in " ".join(out.split())
    code, _, err = blockfl(capsys, "simulate", "--config", str(bad))
    assert code == 2 and f"{bad} is not valid TOML" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--data-dataset", "mnist"], "dataset mnist needs data.mnist_path"),
    (["--rule", "krum", "--aggregation-f", "2", "--devices", "4"],
     "aggregation.f = 2 out of range for 4 devices"),
])
def test_a_simulate_refused_by_validation_makes_no_run_directory(argv, message, tmp_path,
                                                                 capsys):
    out_dir = tmp_path / "runs"
    code, _, err = blockfl(capsys, "simulate", "--run-out-dir", str(out_dir), *argv)
    assert code == 2 and message in err
    assert not out_dir.exists()


def test_a_simulate_whose_set_up_fails_removes_its_run_directory(tmp_path, capsys):
    out_dir = tmp_path / "runs"
    url = f"http://127.0.0.1:{free_port()}"  # no node there: the ledger fails to open
    code, _, err = blockfl(capsys, "simulate", "--run-out-dir", str(out_dir), "--rpc-url", url)
    assert code == 2 and f"no Ethereum node answers at {url}" in err
    assert out_dir.is_dir() and list(out_dir.iterdir()) == []  # the run's folder is gone


def test_network_up_ports_are_checked_before_anything_starts(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = blockfl(capsys, "network", "up", "--port", "65534")
    assert code == 2
    assert "--port 65534 leaves no room for anvil and 3 miners: ports up to 65537" in err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for tls in ((), ("--tls",)):  # no certificates are made for a network that cannot start
            code, _, err = blockfl(capsys, "network", "up", "--port", str(port), *tls)
            assert code == 2
            assert f"port(s) {port} on 127.0.0.1 already in use: the network needs {port}-" in err
            assert not (tmp_path / "runs").exists()


def test_network_up_without_anvil_names_what_to_install(tmp_path, capsys, monkeypatch):
    # as from a wheel: no node_modules, no anvil on PATH
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BLOCKFL_NODE_MODULES", str(tmp_path / "no_node_modules"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("BLOCKFL_ANVIL", raising=False)
    for argv in (("network", "up"), ("chain", "up", "--state-dir", str(tmp_path / "state"))):
        code, _, err = blockfl(capsys, *argv)
        assert code == 2
        assert err.strip() == "blockfl: error: " + ANVIL_MISSING
        assert "npm install @foundry-rs/anvil-linux-amd64" in err and "PATH" in err
    assert not (tmp_path / "runs").exists()


def test_servers_on_every_interface_are_reached_on_loopback():
    from blockfl.chain.node import reach_host
    from blockfl.launcher import certificate_names

    assert reach_host("0.0.0.0") == "127.0.0.1" and reach_host("::") == "[::1]"
    assert reach_host("10.1.2.3") == "10.1.2.3"
    assert certificate_names("10.1.2.3") == ["10.1.2.3"]
    assert certificate_names("0.0.0.0") == [socket.gethostname()]


def test_a_quorum_above_the_miners_is_one_line(capsys, tmp_path):
    """A contract rejection at deployment (here `QuorumUnreachable`) is no traceback."""
    code, _, err = blockfl(capsys, "simulate", "--rounds", "1", "--set", "chain.quorum=5",
                           "--run-out-dir", str(tmp_path))
    assert code == 2
    assert err.strip().splitlines() == [
        "blockfl: error: QuorumUnreachable(quorum=5, miners=3): a fixed quorum cannot exceed "
        "the registered miners; register more miners or lower chain.quorum (0 = a majority)"]
