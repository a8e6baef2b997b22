"""The contract codecs are registered with faust and usable as `value_serializer` names."""

from __future__ import annotations

import pytest
from faust.serializers import codecs

from schemas.codecs import CODECS, DecodeError
from schemas.control import ControlCommand
from tests.unit.contracts.test_ta_signal_codec import GOLDEN_AVRO, GOLDEN_JSON, golden_signal


def test_every_codec_is_registered() -> None:
    for name in CODECS:
        assert codecs.get_codec(name) is CODECS[name]


def test_faust_dumps_and_loads_through_the_codecs() -> None:
    sig = golden_signal()
    assert codecs.dumps("torghut_ta_signal", sig) == GOLDEN_AVRO
    assert codecs.dumps("torghut_ta_signal_json", sig) == GOLDEN_JSON
    assert codecs.loads("torghut_ta_signal", GOLDEN_JSON) == sig
    cmd = ControlCommand(engaged=True, operator="op", reason="why")
    assert codecs.loads("torghut_control", codecs.dumps("torghut_control", cmd)) == cmd


def test_composed_codec_keeps_its_functions() -> None:
    chained = codecs.get_codec("torghut_ta_signal") | codecs.get_codec("binary")
    assert chained.loads(chained.dumps(golden_signal())) == golden_signal()


def test_bad_bytes_raise_decode_error_through_faust() -> None:
    with pytest.raises(DecodeError) as caught:
        codecs.loads("torghut_decision", b"{}")
    assert caught.value.reason == "schema_invalid"
