"""The OVSDB IDL's JSON parser: the C one from the system's python3-openvswitch (installed with
openvswitch-switch) when the `ovs` wheel has none and that one is built for this interpreter,
the Python one otherwise; chosen once per process."""

from __future__ import annotations

import importlib.machinery
import json
import os

import ovs
import ovs.json
import pytest

from ovsctl.agent.host import ovsdb

UPDATE = {
    "method": "update3",
    "params": [["monid", "x"], "0" * 36, {"Interface": {"u1": {"modify": {"ofport": 7}}}}],
    "id": None,
}


@pytest.fixture
def python_parser(monkeypatch):
    """ovs.json as the wheel leaves it: no C parser."""
    monkeypatch.setattr(ovs.json, "PARSER", ovs.json.PARSER_PY)
    monkeypatch.delattr(ovs, "_json", raising=False)
    yield


def _system_parser_for_this_interpreter() -> str | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(ovsdb.SYSTEM_OVS, "_json" + suffix)
        if os.path.exists(path):
            return path
    return None


def test_the_system_c_parser_is_used_when_built_for_this_interpreter(python_parser):
    """Debian's python3-openvswitch builds its parser for Debian's python3 only: another
    interpreter (the venv's may differ) keeps the Python parser, and the IDL's messages still
    parse."""
    built = _system_parser_for_this_interpreter()
    parser = ovsdb.use_c_json()
    if built:
        assert parser == ovs.json.PARSER_C, built
        assert type(ovs.json.Parser()).__module__ == "ovs._json"
    else:
        assert parser == ovs.json.PARSER_PY
        assert type(ovs.json.Parser()).__module__ == "ovs.json"
    assert ovs.json.from_string(json.dumps(UPDATE)) == UPDATE
    assert isinstance(ovs.json.from_string("[1, "), str)  # an error, whichever parser says it


def test_an_unloadable_parser_leaves_the_python_one(python_parser, tmp_path, caplog):
    bad = tmp_path / ("_json" + importlib.machinery.EXTENSION_SUFFIXES[0])
    bad.write_bytes(b"not a shared object")
    caplog.set_level("INFO", logger=ovsdb.log.name)
    assert ovsdb.use_c_json(str(tmp_path)) == ovs.json.PARSER_PY
    assert ovs.json.from_string('{"a": [1]}') == {"a": [1]}
    assert "not usable" in caplog.text


def test_a_suffix_that_fails_does_not_stop_the_next_one(python_parser, tmp_path, caplog):
    first, second = importlib.machinery.EXTENSION_SUFFIXES[:2]
    (tmp_path / ("_json" + first)).write_bytes(b"not a shared object")
    built = _system_parser_for_this_interpreter()
    if built:  # the working one under the later name: it is loaded
        os.symlink(built, tmp_path / ("_json" + second))
    else:  # another unloadable one: it is tried too
        (tmp_path / ("_json" + second)).write_bytes(b"not a shared object either")
    caplog.set_level("INFO", logger=ovsdb.log.name)
    parser = ovsdb.use_c_json(str(tmp_path))
    assert f"_json{first} not usable" in caplog.text
    if built:
        assert parser == ovs.json.PARSER_C
        assert ovs.json.from_string(json.dumps(UPDATE)) == UPDATE
    else:
        assert parser == ovs.json.PARSER_PY
        assert f"_json{second} not usable" in caplog.text


def test_no_parser_there_leaves_the_python_one(python_parser, tmp_path):
    assert ovsdb.use_c_json(str(tmp_path)) == ovs.json.PARSER_PY
    assert ovs.json.Parser().__class__.__module__ == "ovs.json"


def test_the_parser_is_chosen_and_logged_once_per_process(python_parser, monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(ovsdb, "_parser", None)
    monkeypatch.setattr(ovsdb, "use_c_json", lambda: calls.append(1) or ovs.json.PARSER_PY)
    caplog.set_level("INFO", logger=ovsdb.log.name)
    assert {ovsdb.json_parser() for _ in range(3)} == {ovs.json.PARSER_PY}
    assert calls == [1]
    assert caplog.text.count("JSON parsed by the PYTHON parser") == 1
