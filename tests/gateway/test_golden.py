"""The gateway's side of the golden vectors (tests/vectors/frames.json, made by an encoder
independent of both sides): every byte the gateway writes to a node, and every CoAP
datagram it reads or writes, equal to the vectors. The firmware checks its side of
the same vectors (tests/firmware/mp/t_golden.py)."""
import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from core_ext import implementations
from gateway.decisions.downlink import Command
from gateway.protocol import coap, cose
from gateway.protocol.framing import Deframer, encode_frame
from gateway.protocol.numbers import (
    CF_COSE_MAC0,
    COAP_ACK,
    COAP_CHANGED,
    COAP_CON,
    COAP_NON,
    COAP_OPT_CONTENT_FORMAT,
    COAP_OPT_URI_PATH,
    COAP_POST,
)
from gateway.runtime.ingest import ack_message

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "frames.json").read_text())
KEY = bytes.fromhex(GOLDEN["key"])


@pytest.mark.parametrize("vector", GOLDEN["acks"], ids=lambda a: f"seq{a['seq']}-status{a['status']}")
def test_acks_are_the_vectors(vector):
    msg = ack_message(KEY, vector["seq"], vector["status"])
    assert msg.hex() == vector["cose_hex"]
    assert encode_frame(msg).hex() == vector["frame_hex"]
    assert ack_message(cose.MacKey(KEY), vector["seq"], vector["status"]) == msg  # the precomputed-key path too
    parsers = implementations("ingest")
    for name, impl in implementations("verify").items():  # the acks the pipeline sends: written in the core
        verifier = impl.Verifier(lambda kid: None, parsers[name].Parser())
        assert verifier.ack(KEY, vector["seq"], vector["status"]) == msg, name


@pytest.mark.parametrize("vector", GOLDEN["command_acks"], ids=lambda a: f"seq{a['seq']}")
def test_command_acks_are_the_vectors(vector):
    commands = [Command("pump3", cid, cmd, args) for cid, cmd, args in vector["commands"]]
    msg = ack_message(KEY, vector["seq"], vector["status"], commands)
    assert msg.hex() == vector["cose_hex"]
    assert encode_frame(msg).hex() == vector["frame_hex"]
    assert Deframer().feed(bytes.fromhex(vector["frame_hex"])) == [msg]


@pytest.mark.parametrize("vector", GOLDEN["coap"], ids=lambda c: c["exchange"])
def test_coap_datagrams_are_the_vectors(vector):
    token, mid = bytes.fromhex(vector["token_hex"]), vector["mid"]
    frame = next(f for f in GOLDEN["frames"] if f["seq"] == vector["seq"])
    con = vector["exchange"] == "con"
    request = bytes.fromhex(vector["request_hex"])
    # what a node sends, built by the project's encoder, and read by the server's parser
    assert coap.request(mid, bytes.fromhex(frame["cose_hex"]), token, mtype=COAP_CON if con else COAP_NON) == request
    mtype, code, rmid, rtoken, options, payload = coap.parse(request)
    assert (mtype, code, rmid, rtoken) == (COAP_CON if con else COAP_NON, COAP_POST, mid, token)
    assert options == {COAP_OPT_URI_PATH: [b"d"], COAP_OPT_CONTENT_FORMAT: [bytes([CF_COSE_MAC0])]}
    assert payload.hex() == frame["cose_hex"]
    # what the gateway answers: the piggybacked 2.04 with its ack
    ack = ack_message(KEY, vector["seq"], 0)
    assert ack.hex() == vector["ack_cose_hex"]
    response = coap.response(COAP_ACK if con else COAP_NON, COAP_CHANGED, mid, token, ack, CF_COSE_MAC0)
    assert response.hex() == vector["response_hex"]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3), st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=8), st.binary(max_size=40),
       st.none() | st.integers(0, 0xFFFF))
def test_responses_as_the_general_encoder_writes_them(mtype, code, mid, token, payload, cf):
    # coap.response writes its one option directly: byte for byte what coap.encode writes
    options = [(COAP_OPT_CONTENT_FORMAT, coap.uint(cf))] if cf is not None else []
    assert coap.response(mtype, code, mid, token, payload, cf) == coap.encode(mtype, code, mid, token, options, payload)
