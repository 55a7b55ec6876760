"""Loading YAML/JSON manifest files and directories: :func:`load_documents` reads them into plain
dicts, :func:`load_objects` also parses them. Errors name the file and the document."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping

import yaml

from ovsctl.k8s.kinds import ModelError
from ovsctl.k8s.labels import _show
from ovsctl.k8s.objects import Object
from ovsctl.k8s.parsing import parse

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

# --------------------------------------------------------------------------- loading


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when available
    """Safe loader that keeps timestamps as strings (as Kubernetes does)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ, _MERGE = (_TAG + t for t in ("str", "map", "seq", "merge"))


def _load_all(text: str) -> list:
    """yaml.load_all(text, Loader=_Loader), faster: libyaml composes each document's nodes and
    the common ones (mappings, sequences, strings) become Python values here, without
    PyYAML's generic constructor (two thirds of reading a cluster state of 2,000 objects at
    the agent's start). Any other node (numbers, booleans, null, other tags) goes through the
    loader's own constructor, and a document with a merge key (`<<`) or an unhashable key
    entirely, so the values and the errors are the loader's."""
    loader = _Loader(text)
    try:
        docs = []
        while loader.check_node():
            root = loader.get_node()
            try:
                docs.append(_value(loader, root, {}))
            except _Slow:
                docs.append(loader.construct_document(root))
        return docs
    finally:
        loader.dispose()


class _Slow(Exception):
    """This document needs the loader's constructor."""


def _value(loader, node, memo: dict):
    tag = node.tag
    if tag == _STR:
        return node.value
    done = memo.get(id(node))  # an alias: the same object, as the loader gives
    if done is not None:
        return done
    if tag == _MAP:
        out: dict = {}
        memo[id(node)] = out
        for k, v in node.value:
            if k.tag == _MERGE:
                raise _Slow
            key = _value(loader, k, memo)
            try:
                out[key] = _value(loader, v, memo)
            except TypeError:  # an unhashable key: the loader says so
                raise _Slow from None
        return out
    if tag == _SEQ:
        seq: list = []
        memo[id(node)] = seq
        seq.extend(_value(loader, v, memo) for v in node.value)
        return seq
    return loader.construct_document(node)


def manifest_files(directory: str) -> list[str]:
    """The manifest files of a directory: *.yaml, *.yml, *.json, sorted by name, not recursive.
    Hidden files (a leading '.', e.g. editors' and atomic writers' temporaries) are skipped."""
    out = []
    with os.scandir(directory) as it:
        for e in it:
            if e.name.startswith(".") or not e.name.endswith(MANIFEST_SUFFIXES):
                continue
            try:
                if e.is_file():
                    out.append(e.name)
            except OSError:
                continue
    return [os.path.join(directory, n) for n in sorted(out)]


def _flatten(doc: object, where: str) -> Iterator[tuple[str, dict]]:
    """Yield (location, object) for a document, flattening `kind: List` / `kind: XList`."""
    if not isinstance(doc, Mapping):
        raise ModelError(
            f"must be a mapping (a Kubernetes object), got {_show(doc)}", document=where
        )
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in doc:
        items = doc.get("items")
        if items is None:
            return
        if not isinstance(items, list):
            raise ModelError(f"must be a list, got {_show(items)}", document=where, path="items")
        item_kind = kind[: -len("List")]  # "" for a plain List
        api_version = doc.get("apiVersion")
        for i, item in enumerate(items):
            iwhere = f"{where} items[{i}]"
            if item_kind and isinstance(item, Mapping) and "kind" not in item:
                # API list responses (PodList, ...) leave kind/apiVersion off their items
                item = {"kind": item_kind, **item}
                if api_version and "apiVersion" not in item:
                    item["apiVersion"] = api_version
            yield from _flatten(item, iwhere)
        return
    yield where, dict(doc)


def _documents(text: str, filename: str) -> list[tuple[str, dict]]:
    """(location, dict) for every non-empty object in a manifest's text."""
    out: list[tuple[str, dict]] = []
    if filename.endswith(".json"):
        if not text.strip():
            return out
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise ModelError(f"invalid JSON: {e}", file=filename) from None
        try:
            out.extend(_flatten(doc, "document 1"))
        except ModelError as e:
            raise e.located(filename) from None
        return out
    try:
        docs = _load_all(text)  # the safe loader's values (SafeLoader subclass)
    except yaml.YAMLError as e:
        msg = str(e).replace('in "<unicode string>", ', "")
        raise ModelError(f"invalid YAML: {msg}", file=filename) from None
    for i, doc in enumerate(docs):
        if doc is None:
            continue  # empty document
        try:
            out.extend(_flatten(doc, f"document {i + 1}"))
        except ModelError as e:
            raise e.located(filename) from None
    return out


def _read(filename: str) -> str:
    try:
        with open(filename, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"cannot read: {e.strerror or e}", file=filename) from None
    return _decode(data, filename)


def _decode(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ModelError(f"not UTF-8: {e}", file=filename) from None


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        try:
            return manifest_files(path)
        except OSError as e:
            raise ModelError(f"cannot list directory: {e.strerror or e}", file=path) from None
    return [path]


def load_documents(path: str) -> list[dict]:
    """Kubernetes objects (plain dicts) from a file or a directory of manifests.

    A directory contributes its *.yaml, *.yml and *.json files (sorted, not recursive, hidden
    files skipped). YAML files may hold several documents; `kind: List` and `kind: XList` are
    flattened; empty documents are skipped. Errors (ModelError) name the file and document.
    """
    out: list[dict] = []
    for filename in _files(path):
        out.extend(d for _, d in _documents(_read(filename), filename))
    return out


def objects_from_text(text: str | bytes, filename: str) -> list[Object]:
    """Parse a manifest's content (named filename, whose suffix picks JSON or YAML)."""
    if isinstance(text, bytes):
        text = _decode(text, filename)
    out: list[Object] = []
    for where, doc in _documents(text, filename):
        try:
            out.append(parse(doc))
        except ModelError as e:
            raise e.located(filename, where) from None
    return out


def load_objects(path: str) -> list[Object]:
    """Parsed model objects from a file or a directory (see :func:`load_documents`)."""
    out: list[Object] = []
    for filename in _files(path):
        out.extend(objects_from_text(_read(filename), filename))
    return out
