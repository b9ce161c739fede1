"""Property-based fuzzing (Hypothesis) of every decoder that sees network bytes.

Each decoder either returns a value or raises its one named rejection (`JsonRejected`,
`TensorFormatError`, `WireError`), and the miner's HTTP API answers every fuzzed upload,
gossip and block announcement with a JSON error below 500. Where a reference exists the
fuzzer compares against it: `json` for bounded JSON, a plain loop for the nesting scan, and the
safetensors library for the miner's own safetensors parser.

CI runs the `ci` profile (tests/conftest.py); a longer run:
`pytest tests/test_fuzz.py --hypothesis-profile=fuzz`.
"""

from __future__ import annotations

import json
import re
import struct

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from blockfl import safejson
from blockfl.chain.deploy import chain_params
from blockfl.chain.evm import EvmLedger, embedded_web3
from blockfl.events import EventLog
from blockfl.keys import derived_key
from blockfl.miners.api import create_app
from blockfl.miners.service import MinerService, MiningSettings
from blockfl.models import model_spec
from blockfl.signing import address_of
from blockfl.sim.setup import build_experiment
from blockfl.tensors import TensorFormatError, decode, decode_checked, encode, tensor_hash
from blockfl.wire import (
    RECORD_HEADER,
    TENSOR_MEDIA_TYPE,
    WireError,
    parse_block,
    parse_record_header,
    proposal_to_dict,
)
from tests.conftest import small_config

# ---------------------------------------------------------------- strategies

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
# text where brackets, quotes and escapes meet, inside and outside strings
bracket_text = st.text(alphabet='[]{}"\\,:1 a', max_size=300)
junk = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=80),
                 st.binary(max_size=40).map(lambda b: "0x" + b.hex()), st.lists(st.integers()))
RECORD_FIELDS = ("device", "round", "base_model_hash", "update_hash", "samples",
                 "compute_time_ms", "signature")
VALID_RECORD = {
    "device": address_of(derived_key("fuzz", 0)), "round": 1, "base_model_hash": "0x" + "11" * 32,
    "update_hash": "0x" + "22" * 32, "samples": 5, "compute_time_ms": 40,
    "signature": "0x" + "33" * 65,
}


@st.composite
def records(draw: st.DrawFn) -> dict:
    """A signed record's JSON fields, some replaced by junk or left out."""
    out = dict(VALID_RECORD)
    for name in draw(st.sets(st.sampled_from(RECORD_FIELDS))):
        if draw(st.booleans()):
            out[name] = draw(junk)
        else:
            del out[name]
    return out


@st.composite
def blocks(draw: st.DrawFn) -> dict:
    """A block's JSON fields, with fuzzed records and some fields junk."""
    out = {"prev_hash": "0x" + "44" * 32, "round": 1, "global_model_hash": "0x" + "55" * 32,
           "miner": VALID_RECORD["device"], "nonce": "7",
           "updates": draw(st.lists(records(), max_size=3)),
           "excluded": draw(st.lists(st.binary(min_size=32, max_size=32).map(
               lambda b: "0x" + b.hex()) | junk, max_size=2))}
    for name in draw(st.sets(st.sampled_from(sorted(out)))):
        out[name] = draw(junk)
    return out


printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=600)
record_headers = st.one_of(printable, records().map(json.dumps))

STATE = {"w": torch.arange(6, dtype=torch.float32).reshape(3, 2), "b": torch.ones(2)}
SPEC = model_spec(STATE)
VALID_PAYLOAD = encode(STATE)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """Safetensors bytes: random, a valid payload mutated, or a fuzzed header over random data."""
    kind = draw(st.sampled_from(["random", "mutated", "header"]))
    if kind == "random":
        return draw(st.binary(max_size=400))
    if kind == "mutated":
        data = bytearray(VALID_PAYLOAD)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        cut = draw(st.integers(0, len(data)) | st.just(len(data)))
        return bytes(data[:cut])
    entry = st.fixed_dictionaries({
        "dtype": st.sampled_from(["F32", "F64", "F16", "BF16", "I8", "U8", "BOOL", "X"]) | junk,
        "shape": st.lists(st.integers(-2, 4), max_size=3) | junk,
        "data_offsets": st.lists(st.integers(-1, 60), min_size=2, max_size=2) | junk,
    })
    header = draw(st.dictionaries(st.sampled_from(["w", "b", "c", "__metadata__"]), entry,
                                  max_size=3))
    text = json.dumps(header).encode()
    data = draw(st.binary(max_size=64))
    length = draw(st.just(len(text)) | st.integers(0, 2**64 - 1))
    return struct.pack("<Q", length) + text + data


# ---------------------------------------------------------------- decoders

def nesting_reference(text: str) -> int:
    """The deepest nesting of `[`/`{` outside JSON strings, one character at a time."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


@given(bracket_text)
def test_nesting_scan_matches_a_plain_loop(text):
    assert safejson.nesting_depth(text.encode()) == nesting_reference(text)


@given(json_values)
def test_bounded_json_decodes_what_json_encodes(value):
    text = json.dumps(value)
    if nesting_reference(text) <= safejson.MAX_DEPTH:
        assert safejson.loads(text, max_bytes=len(text.encode()) + 1) == json.loads(text)


@given(st.binary(max_size=300) | bracket_text.map(str.encode))
def test_bounded_json_accepts_or_names_its_rejection(data):
    try:
        safejson.loads(data, max_bytes=200)
    except safejson.JsonRejected as exc:
        assert exc.reason in ("too_large", "too_deep", "malformed")


@given(payloads())
def test_safetensors_parser_agrees_with_the_library_or_rejects(data):
    try:
        state, digest, _ = decode_checked(data, SPEC, max_bytes=10_000)
    except TensorFormatError as exc:
        assert re.fullmatch(r"[a-z_]+", exc.reason)
        return
    reference = decode(data, max_bytes=10_000)  # the safetensors library accepts it too
    assert digest == tensor_hash(reference) == tensor_hash(state)


@given(record_headers)
def test_record_header_parses_or_is_a_wire_error(value):
    try:
        signed = parse_record_header(value)
    except WireError:
        return
    assert signed.record.round == json.loads(value)["round"]


@given(blocks().map(lambda b: json.dumps(b).encode()) | st.binary(max_size=300))
def test_block_announcement_parses_or_is_a_wire_error(body):
    try:
        block = parse_block(body)
    except WireError:
        return
    assert parse_block(json.dumps(proposal_to_dict(block)).encode()) == block


# ---------------------------------------------------------------- the miner's HTTP API

@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """A miner's API (TestClient) on the embedded chain, shared by the examples."""
    tmp = tmp_path_factory.mktemp("fuzz")
    config = small_config(tmp, network={"devices": 3, "miners": 1})
    experiment = build_experiment(config)
    key = derived_key("fuzz-miner", 0)
    ledger = EvmLedger.create(embedded_web3(), chain_params(config, experiment.genesis),
                              [address_of(key)])
    service = MinerService(key, ledger, config.verification,
                           MiningSettings(t_wait=60.0, block_size=3, hash_rate=0.0),
                           tmp / "miner", [], experiment.initial,
                           EventLog("miner", tmp / "miner.jsonl"))
    yield TestClient(create_app(service, 10_000))
    service.close()


def assert_named_rejection(response) -> None:
    assert 400 <= response.status_code < 500, response.text
    assert re.fullmatch(r"[a-z_0-9]+", response.json()["error"]), response.text


@given(path=st.sampled_from(["/updates", "/gossip"]), header=record_headers, body=payloads())
def test_uploads_and_gossip_get_named_json_rejections(api, path, header, body):
    response = api.post(path, content=body,
                        headers={"Content-Type": TENSOR_MEDIA_TYPE, RECORD_HEADER: header})
    assert_named_rejection(response)


@given(blocks().map(lambda b: json.dumps(b).encode()) | st.binary(max_size=300)
       | bracket_text.map(str.encode))
def test_block_announcements_get_named_json_rejections(api, body):
    response = api.post("/blocks", content=body, headers={"Content-Type": "application/json"})
    if response.status_code != 202:  # a well-formed block of a past round is fine
        assert_named_rejection(response)
