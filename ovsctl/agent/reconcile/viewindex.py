"""The policy View kept up to date per changed object: namespace labels, nodes, and the pods
(the cluster's, with this node's attachments over them) by namespace. An event costs the
objects it changed (and this node's attachments), not the whole cluster."""

from __future__ import annotations

from dataclasses import dataclass, field

from flows.family import ordered
from flows.policy import PodInfo, View
from ovsctl.agent.reconcile import finished


@dataclass
class Delta:
    """What changed since the last `take`: pod pairs (before, after; None = absent), whether
    namespace labels (and which) or nodes changed, and the other keys (policies,
    Services...). The first Delta says that namespaces and nodes changed, naming none: all."""

    changed: list = field(default_factory=list)
    namespaces: bool = False
    # namespace name -> its labels before (None: it was not there), for those whose changed
    ns_before: dict = field(default_factory=dict)
    nodes: bool = False
    keys: set = field(default_factory=set)


def _pod_info(obj) -> PodInfo:
    return PodInfo(
        obj.namespace,
        obj.name,
        obj.labels.pairs,  # sorted items, shared by the pods of one label set (k8s/parsing.py)
        obj.ip,
        _port_triples(obj.ports),
        ready=obj.ready,
        terminating=obj.terminating,
        ips=ordered(obj.ips),  # both addresses of a dual-stack pod
    )


# a pod's container ports as (name, port, protocol), one tuple per distinct port list: pods of
# one template share their list (k8s/parsing.py), so 50,000 pods hold a few of these, not
# 50,000 (starts over past _PORTS_MAX distinct lists)
_PORTS: dict[tuple, tuple] = {}
_PORTS_MAX = 1 << 14


def _port_triples(ports: tuple) -> tuple[tuple[str, int, str], ...]:
    hit = _PORTS.get(ports)
    if hit is None:
        if len(_PORTS) >= _PORTS_MAX:
            _PORTS.clear()
        hit = _PORTS[ports] = tuple((cp.name, cp.port, cp.protocol) for cp in ports)
    return hit


def _put(table: dict, name: str, value) -> bool:
    """table[name] = value (None: removed); did it change?"""
    if table.get(name) == value:
        return False
    if value is None:
        del table[name]
    else:
        table[name] = value
    return True


class ViewIndex:
    def __init__(self, cluster: dict, store):
        self.cluster = cluster
        self.store = store  # pods.PodStore: this node's attachments
        self.delta = Delta(namespaces=True, nodes=True)  # the first View: everything is new
        self._ns: dict[str, dict] = {}  # name -> labels
        self._nodes: dict[str, tuple] = {}  # name -> (sorted label items, addresses)
        self._remote: dict[tuple, PodInfo] = {}  # cluster pods with an address
        self._local: dict[tuple, PodInfo] = {}  # this node's attachments
        self._pods: dict[tuple, PodInfo] = {}  # the two together (an attachment wins)
        self._by_ns: dict[str, dict[str, PodInfo]] = {}
        self._lists: dict[str, list[PodInfo]] = {}  # ns -> its pods by name, built on use
        # namespace selector -> the namespaces with pods it selects (View.namespaces_selected),
        # new whenever a namespace's labels change or a namespace gains or loses its pods
        self._ns_selected: dict = {}

    def update(self, keys) -> View:
        """Take in the changed `keys` (and this node's attachments as they are now); the
        changes pile up in `delta` until the caller takes it. Returns the View."""
        touched: set[tuple] = set()
        d = self.delta
        for key in keys:
            kind, obj = key[0], self.cluster.get(key)
            if kind == "Pod":
                pk = (key[1], key[2])
                if obj is not None and not obj.host_network and obj.ip and not finished(obj):
                    self._remote[pk] = _pod_info(obj)
                else:
                    self._remote.pop(pk, None)
                touched.add(pk)
            elif kind == "Namespace":
                labels = obj.labels_dict() if obj is not None else None
                before = self._ns.get(key[2])
                if _put(self._ns, key[2], labels):
                    d.namespaces = True
                    d.ns_before.setdefault(key[2], before)
            elif kind == "Node":
                node = None
                if obj is not None:
                    node = (obj.labels.pairs, obj.addresses)
                d.nodes |= _put(self._nodes, key[2], node)
            else:
                d.keys.add(key)
        local = self._attachments()
        touched |= {
            k for k in local.keys() | self._local.keys() if local.get(k) != self._local.get(k)
        }
        self._local = local
        for pk in touched:
            now = local.get(pk) or self._remote.get(pk)
            prev = self._pods.get(pk)
            if prev == now:
                continue
            d.changed.append((prev, now))
            ns, name = pk
            if now is None:
                del self._pods[pk]
                del self._by_ns[ns][name]
                if not self._by_ns[ns]:
                    del self._by_ns[ns]
                    self._ns_selected = {}
            else:
                self._pods[pk] = now
                if ns not in self._by_ns:
                    self._by_ns[ns] = {}
                    self._ns_selected = {}
                self._by_ns[ns][name] = now
            self._lists.pop(ns, None)
        if d.namespaces:
            self._ns_selected = {}
        return self.view()

    def take(self) -> Delta:
        d, self.delta = self.delta, Delta()
        return d

    def view(self) -> View:
        by_ns = {}
        for ns in sorted(self._by_ns):
            pods = self._lists.get(ns)
            if pods is None:
                members = self._by_ns[ns]
                pods = self._lists[ns] = [members[n] for n in sorted(members)]
            by_ns[ns] = pods
        return View.indexed(dict(self._ns), by_ns, dict(self._nodes), self._ns_selected)

    def _attachments(self) -> dict[tuple, PodInfo]:
        """This node's attached pods as peers. A pod with several interfaces is one peer: its
        primary one (the default route's) comes last and wins."""
        out: dict[tuple, PodInfo] = {}
        atts = list(self.store.pods.values())
        for att in sorted(atts, key=lambda a: (a.default_route, a.ifname == "eth0")):
            if att.ofport <= 0:
                continue
            obj = self.cluster.get(("Pod", att.namespace, att.name))
            if obj is not None and finished(obj):
                continue  # its sandbox goes soon; its IP is nobody's peer meanwhile
            labels = tuple(sorted(obj.labels_dict().items())) if obj is not None else ()
            ports = (
                tuple((cp.name, cp.port, cp.protocol) for cp in obj.ports)
                if obj is not None
                else ()
            )
            out[(att.namespace, att.name)] = PodInfo(
                att.namespace,
                att.name,
                labels,
                att.ip,
                ports,
                local=True,
                ready=obj.ready if obj is not None else True,
                terminating=obj.terminating if obj is not None else False,
                # every address IPAM gave the interface (IPv4 first): policies select both
                ips=ordered(att.ips),
            )
        return out
