"""The manifest loader's own construction of YAML values gives what the safe loader gives, values
and errors alike (ovsctl/k8s/manifests.py's _load_all)."""

from __future__ import annotations

import pytest
import yaml

from ovsctl.k8s import manifests
from ovsctl.k8s.kinds import ModelError

CASES = [
    "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: web}}\n",
    "a: &x {b: 1}\nc: *x\n",  # an alias
    "base: &b {a: 1}\nm:\n  <<: *b\n  c: 2\n",  # a merge key
    "a: !!binary aGk=\nb: !!set {x, y}\n",  # other tags
    "a: 2020-01-01\nb: 0x10\nc: yes\nd: ~\ne: 1.5\nf: '1'\ng: 1_000\n",  # scalars
    "a: &r [*r]\n",  # recursive
    "a: 1\na: 2\n",  # a duplicate key: the last wins
    "{a: [1, {b: c}], 'd': \"e\"}\n---\n- x\n---\n",  # flow style, documents, an empty one
    "- [a, b]\n- {k: [1, 2, {z: null}]}\n",
    "? [1]\n: 2\n",  # an unhashable key: the loader's error
    "!foo x\n",  # an unknown tag: the loader's error
    "a: [1, 2\n",  # a syntax error
]


def _reference(text: str):
    try:
        return repr(list(yaml.load_all(text, Loader=manifests._Loader))), None
    except yaml.YAMLError as e:
        return None, str(e)


@pytest.mark.parametrize("text", CASES)
def test_the_same_values_and_errors_as_the_safe_loader(text):
    want, err = _reference(text)
    try:
        got, got_err = repr(manifests._load_all(text)), None
    except yaml.YAMLError as e:
        got, got_err = None, str(e)
    assert (got, got_err) == (want, err)


def test_aliases_are_one_object_and_errors_name_the_file():
    a, b = manifests._load_all("x: &x {k: v}\ny: *x\n")[0].values()
    assert a is b
    with pytest.raises(ModelError, match=r"m\.yaml.*invalid YAML"):
        manifests.objects_from_text("? [1]\n: 2\n", "m.yaml")
