"""Typed, immutable cluster objects parsed from Kubernetes-shaped dicts.

Every model object is a frozen dataclass: hashable, compared by value, with a ``key`` of
``(kind, namespace, name)`` (namespace ``""`` for cluster-scoped kinds). Both cluster-state
sources (the YAML directory and the Kubernetes API watcher) produce these objects, so nothing
above a source knows where the state came from (DESIGN.md, principle 7).

- :func:`parse` turns one Kubernetes-shaped dict into a model object, validating what the API
  server would and raising :class:`ModelError` naming the object, the field path and the problem.
- :func:`load_documents` reads a file or a directory of YAML/JSON manifests into plain dicts;
  :func:`load_objects` also parses them. Errors name the file and the document.
- :func:`to_dict` renders a model object back to a minimal Kubernetes-shaped dict such that
  ``parse(to_dict(x)) == x``.

This module gathers the model's names; each part lives in a module of its own:
:mod:`ovsctl.k8s.kinds` (the kinds table, constants, :class:`ModelError`),
:mod:`ovsctl.k8s.labels` (syntax checks and :class:`Labels`), :mod:`ovsctl.k8s.objects` (the
model objects), :mod:`ovsctl.k8s.parsing` (:func:`parse`), :mod:`ovsctl.k8s.render`
(:func:`to_dict`) and :mod:`ovsctl.k8s.manifests` (loading YAML/JSON manifests).
"""

from __future__ import annotations

from ovsctl.k8s.kinds import (
    ACCEPTED_KINDS,
    DEFAULT_NAMESPACE,
    KIND_RANK,
    KINDS,
    NAMESPACE_NAME_LABEL,
    POD_PHASES,
    PROTOCOLS,
    STATIC_IP_ANNOTATION,
    KindInfo,
    ModelError,
)
from ovsctl.k8s.labels import Labels
from ovsctl.k8s.manifests import (
    MANIFEST_SUFFIXES,
    load_documents,
    load_objects,
    manifest_files,
    objects_from_text,
)
from ovsctl.k8s.objects import ContainerPort, Generic, Namespace, Node, Object, Pod
from ovsctl.k8s.parsing import parse
from ovsctl.k8s.render import to_dict

__all__ = [
    "ACCEPTED_KINDS",
    "DEFAULT_NAMESPACE",
    "KINDS",
    "KIND_RANK",
    "MANIFEST_SUFFIXES",
    "NAMESPACE_NAME_LABEL",
    "POD_PHASES",
    "PROTOCOLS",
    "STATIC_IP_ANNOTATION",
    "ContainerPort",
    "Generic",
    "KindInfo",
    "Labels",
    "ModelError",
    "Namespace",
    "Node",
    "Object",
    "Pod",
    "load_documents",
    "load_objects",
    "manifest_files",
    "objects_from_text",
    "parse",
    "to_dict",
]
