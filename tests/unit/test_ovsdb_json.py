"""The OVSDB IDL's JSON parser: the C one from the system's python3-openvswitch (installed with
openvswitch-switch) when the `ovs` wheel has none, the Python one when that cannot load."""

from __future__ import annotations

import importlib.machinery
import json

import ovs
import ovs.json
import pytest

from ovsctl.agent.host import ovsdb


@pytest.fixture
def python_parser(monkeypatch):
    """ovs.json as the wheel leaves it: no C parser."""
    monkeypatch.setattr(ovs.json, "PARSER", ovs.json.PARSER_PY)
    monkeypatch.delattr(ovs, "_json", raising=False)
    yield


def test_the_system_c_parser_is_used_and_parses_as_the_json_module(python_parser):
    assert ovsdb.use_c_json() == ovs.json.PARSER_C
    msg = {
        "method": "update3",
        "params": [["monid", "x"], "0" * 36, {"Interface": {"u1": {"modify": {"ofport": 7}}}}],
        "id": None,
    }
    assert type(ovs.json.Parser()).__module__ == "ovs._json"
    assert ovs.json.from_string(json.dumps(msg)) == msg
    assert isinstance(ovs.json.from_string("[1, "), str)  # an error, as the Python parser says


def test_an_unloadable_parser_leaves_the_python_one(python_parser, tmp_path, caplog):
    bad = tmp_path / ("_json" + importlib.machinery.EXTENSION_SUFFIXES[0])
    bad.write_bytes(b"not a shared object")
    caplog.set_level("INFO", logger=ovsdb.log.name)
    assert ovsdb.use_c_json(str(tmp_path)) == ovs.json.PARSER_PY
    assert ovs.json.from_string('{"a": [1]}') == {"a": [1]}
    assert "not usable" in caplog.text


def test_no_parser_there_leaves_the_python_one(python_parser, tmp_path):
    assert ovsdb.use_c_json(str(tmp_path)) == ovs.json.PARSER_PY
    assert ovs.json.Parser().__class__.__module__ == "ovs.json"
