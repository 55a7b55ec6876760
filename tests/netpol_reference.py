"""An independent reference evaluator of Kubernetes NetworkPolicy (networking.k8s.io/v1).

Pure Python on Kubernetes-shaped dicts, written from the API documentation and the API server's
defaulting and validation code, deliberately sharing nothing with `flows/` so that it can catch
bugs there. It answers one question per connection: may pod S open a connection to pod D on one
of D's declared container ports?

    evaluate(namespaces, pods, policies) -> {"srcns/srcpod->dstns/dstpod:PORT/PROTO": bool}

Semantics implemented:
- A pod is isolated for ingress (egress) when at least one policy in its namespace selects it
  (spec.podSelector) and has Ingress (Egress) in its policyTypes. policyTypes, when absent or
  empty, default as the API server does: ["Ingress"], plus "Egress" when spec.egress is a
  non-empty list. Rules of a direction that is not in policyTypes are ignored.
- A non-isolated direction allows everything. An isolated one allows the union of the rules of
  that direction of every policy selecting the pod. A connection needs egress allowed at the
  source and ingress allowed at the destination.
- Peers: podSelector alone (pods of the policy's namespace), namespaceSelector alone (every pod
  of the selected namespaces), both (AND), ipBlock (cidr minus except; it matches pod IPs as
  Antrea and Calico do). Namespaces always carry `kubernetes.io/metadata.name=<name>`.
  An absent, null or empty `from`/`to` means every peer.
- Selectors: matchLabels AND matchExpressions (In, NotIn, Exists, DoesNotExist); {} is all.
- Ports: protocol defaults to TCP; a numeric port, optionally with endPort (inclusive range);
  a named port is resolved against the destination pod's containerPorts (name and protocol
  must both match); an entry with only a protocol means every port of that protocol; absent
  or empty `ports` means every port of every protocol.

`random_case(seed, namespaces, pods)` generates 1-3 valid policies (deterministically) that
exercise all of the above, for randomized comparisons of a datapath against `evaluate`.
"""

from __future__ import annotations

import ipaddress
import random

NS_NAME_LABEL = "kubernetes.io/metadata.name"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


# -- object accessors -----------------------------------------------------------------------


def _meta(obj: dict) -> dict:
    return obj.get("metadata") or {}


def _ns_labels(namespaces: list[dict]) -> dict[str, dict]:
    out = {}
    for ns in namespaces:
        name = _meta(ns).get("name", "")
        labels = dict(_meta(ns).get("labels") or {})
        labels[NS_NAME_LABEL] = name  # set by the API server, always
        out[name] = labels
    return out


def _pod_ns(pod: dict) -> str:
    return _meta(pod).get("namespace") or "default"


def _pod_name(pod: dict) -> str:
    return _meta(pod).get("name", "")


def _pod_labels(pod: dict) -> dict:
    return dict(_meta(pod).get("labels") or {})


def _pod_ip(pod: dict, family: int | None = None) -> str | None:
    """status.podIP; with `family` (4 or 6), the pod's address of that family from
    status.podIPs (a dual-stack pod has one of each), None when it has none."""
    status = pod.get("status") or {}
    if family is None:
        return status.get("podIP") or None
    ips = [e.get("ip") for e in status.get("podIPs") or [] if isinstance(e, dict)]
    ips = [ip for ip in ips if ip] or [status.get("podIP")]
    return next((ip for ip in ips if ip and ipaddress.ip_address(ip).version == family), None)


def _container_ports(pod: dict) -> list[tuple[str | None, int, str]]:
    """(name or None, containerPort, protocol) of every declared container port."""
    out = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            out.append((p.get("name") or None, int(p["containerPort"]), p.get("protocol") or "TCP"))
    return out


# -- label selectors ------------------------------------------------------------------------


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """A LabelSelector dict against a label map. None/{} select everything."""
    if not selector:
        return True
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], list(e.get("values") or [])
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"unknown selector operator {op!r}")
        if not ok:
            return False
    return True


# -- policies -------------------------------------------------------------------------------


def policy_types(policy: dict) -> set[str]:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if not types:  # absent, null or [] are all defaulted by the API server
        types = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    return set(types)


def _policy_ns(policy: dict) -> str:
    return _meta(policy).get("namespace") or "default"


def _selects(policy: dict, pod: dict) -> bool:
    spec = policy.get("spec") or {}
    return _policy_ns(policy) == _pod_ns(pod) and selector_matches(
        spec.get("podSelector"), _pod_labels(pod)
    )


def _ipint(ip: str) -> int:
    return int(ipaddress.ip_address(ip))


def _in_ipblock(block: dict, ip: str | None) -> bool:
    if ip is None:
        return False
    addr = ipaddress.ip_address(ip)
    if addr not in ipaddress.ip_network(block["cidr"], strict=False):
        return False
    return not any(addr in ipaddress.ip_network(e, strict=False) for e in block.get("except") or [])


def _peer_matches(
    peer: dict, policy_ns: str, pod: dict, ns_labels: dict[str, dict], family: int | None = None
) -> bool:
    if peer.get("ipBlock") is not None:  # the address of the connection's family
        return _in_ipblock(peer["ipBlock"], _pod_ip(pod, family))
    ps, nss = peer.get("podSelector"), peer.get("namespaceSelector")
    if ps is None and nss is None:
        raise ValueError(f"invalid peer {peer!r}: needs podSelector, namespaceSelector or ipBlock")
    ns = _pod_ns(pod)
    if nss is None:
        if ns != policy_ns:
            return False
    elif not selector_matches(nss, ns_labels.get(ns, {NS_NAME_LABEL: ns})):
        return False
    return ps is None or selector_matches(ps, _pod_labels(pod))


def _port_matches(entry: dict, dst: dict, port: int, proto: str) -> bool:
    if (entry.get("protocol") or "TCP") != proto:
        return False
    want = entry.get("port")
    if want is None:
        return True
    if isinstance(want, str):  # a named port, resolved on the destination pod
        return any(n == want and pr == proto and p == port for n, p, pr in _container_ports(dst))
    end = entry.get("endPort")
    return want <= port <= end if end is not None else want == port


def _rule_allows(
    rule: dict,
    peer_key: str,
    policy_ns: str,
    peer: dict,
    dst: dict,
    port: int,
    proto: str,
    nsl,
    family: int | None = None,
) -> bool:
    peers = rule.get(peer_key) or []
    if peers and not any(_peer_matches(p, policy_ns, peer, nsl, family) for p in peers):
        return False
    ports = rule.get("ports") or []
    return not ports or any(_port_matches(e, dst, port, proto) for e in ports)


def _direction_allows(
    direction: str,
    subject: dict,
    other: dict,
    dst: dict,
    port: int,
    proto: str,
    policies: list[dict],
    nsl: dict,
    family: int | None = None,
) -> bool:
    """Is `subject` (the destination for Ingress, the source for Egress) allowed to talk with
    `other` on dst's port/proto in this direction?"""
    rules_key, peer_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    isolated = False
    for pol in policies:
        if direction not in policy_types(pol) or not _selects(pol, subject):
            continue
        isolated = True
        for rule in (pol.get("spec") or {}).get(rules_key) or []:
            if _rule_allows(rule, peer_key, _policy_ns(pol), other, dst, port, proto, nsl, family):
                return True
    return not isolated


def allowed(
    src: dict, dst: dict, port: int, proto: str, policies: list[dict], namespaces: list[dict]
) -> bool:
    nsl = _ns_labels(namespaces)
    return _direction_allows("Egress", src, dst, dst, port, proto, policies, nsl) and (
        _direction_allows("Ingress", dst, src, dst, port, proto, policies, nsl)
    )


def conn_key(src: dict, dst: dict, port: int, proto: str) -> str:
    return f"{_pod_ns(src)}/{_pod_name(src)}->{_pod_ns(dst)}/{_pod_name(dst)}:{port}/{proto}"


def evaluate(
    namespaces: list[dict], pods: list[dict], policies: list[dict], family: int | None = None
) -> dict[str, bool]:
    """Every (source pod, other destination pod, declared port of the destination) connection,
    keyed "srcns/srcpod->dstns/dstpod:PORT/PROTO", mapped to whether policy allows it.

    `family` 4 or 6: the connections between the pods' addresses of that family
    (status.podIPs; pods without one are left out); an ipBlock then matches only addresses of
    its own family, selectors match whatever the family. None: status.podIP, as before."""
    nsl = _ns_labels(namespaces)
    out = {}
    for src in pods:
        for dst in pods:
            if src is dst or (_pod_ns(src), _pod_name(src)) == (_pod_ns(dst), _pod_name(dst)):
                continue
            if family is not None and not (_pod_ip(src, family) and _pod_ip(dst, family)):
                continue
            for _, port, proto in sorted(set(_container_ports(dst)), key=lambda t: (t[1], t[2])):
                key = conn_key(src, dst, port, proto)
                out[key] = _direction_allows(
                    "Egress", src, dst, dst, port, proto, policies, nsl, family
                ) and _direction_allows(
                    "Ingress", dst, src, dst, port, proto, policies, nsl, family
                )
    return out


# -- random policies ------------------------------------------------------------------------


class _Gen:
    """The vocabulary random policies are drawn from: the given namespaces and pods."""

    def __init__(self, rng: random.Random, namespaces: list[dict], pods: list[dict]):
        self.rng = rng
        self.pods = sorted(pods, key=lambda p: (_pod_ns(p), _pod_name(p)))
        names = {_meta(n).get("name", "") for n in namespaces} | {_pod_ns(p) for p in pods}
        self.namespaces = sorted(names)
        nsl = _ns_labels(namespaces)
        self.ns_labels = {n: nsl.get(n, {NS_NAME_LABEL: n}) for n in self.namespaces}
        self.pod_ns = sorted({_pod_ns(p) for p in pods}) or self.namespaces
        # every address of every pod (a dual-stack pod's IPv6 one too), IPv4 first
        addrs = {_pod_ip(p) for p in pods if _pod_ip(p)} | {
            _pod_ip(p, 6) for p in pods if _pod_ip(p, 6)
        }
        self.ips = sorted(addrs, key=lambda i: (ipaddress.ip_address(i).version, _ipint(i)))
        self.ports = sorted({(p, pr) for pod in pods for _, p, pr in _container_ports(pod)})
        self.named = sorted({(n, pr) for pod in pods for n, _, pr in _container_ports(pod) if n})

    # selectors ---------------------------------------------------------------------------

    def _vocab(self, label_maps: list[dict]) -> dict[str, list[str]]:
        vocab: dict[str, set[str]] = {}
        for labels in label_maps:
            for k, v in labels.items():
                vocab.setdefault(k, set()).add(v)
        return {k: sorted(v) for k, v in sorted(vocab.items())}

    def selector(self, label_maps: list[dict], allow_empty: bool = True) -> dict:
        rng = self.rng
        vocab = self._vocab(label_maps)
        kind = rng.choice(
            ["empty", "labels", "expr", "both"] if allow_empty else ["labels", "expr", "both"]
        )
        if kind == "empty" or not vocab:
            return {}
        out: dict = {}
        keys = list(vocab)
        if kind in ("labels", "both"):
            k = rng.choice(keys)
            out["matchLabels"] = {k: rng.choice(vocab[k])}
        if kind in ("expr", "both"):
            exprs = []
            for _ in range(rng.choice([1, 1, 2])):
                k = rng.choice(keys + ["absent-key"])
                op = rng.choice(OPERATORS)
                e: dict = {"key": k, "operator": op}
                if op in ("In", "NotIn"):
                    pool = vocab.get(k, []) + ["nomatch"]
                    e["values"] = sorted(set(rng.sample(pool, rng.randint(1, min(2, len(pool))))))
                exprs.append(e)
            out["matchExpressions"] = exprs
        return out

    def pod_selector(self, ns: str | None = None, allow_empty: bool = True) -> dict:
        pods = [p for p in self.pods if ns is None or _pod_ns(p) == ns]
        return self.selector([_pod_labels(p) for p in pods] or [{}], allow_empty)

    def ns_selector(self) -> dict:
        rng = self.rng
        if rng.random() < 0.3:  # by the automatic name label
            names = rng.sample(self.namespaces, rng.randint(1, min(2, len(self.namespaces))))
            if len(names) == 1 and rng.random() < 0.5:
                return {"matchLabels": {NS_NAME_LABEL: names[0]}}
            return {
                "matchExpressions": [
                    {
                        "key": NS_NAME_LABEL,
                        "operator": rng.choice(["In", "NotIn"]),
                        "values": sorted(names),
                    }
                ]
            }
        return self.selector(list(self.ns_labels.values()))

    # peers ------------------------------------------------------------------------------

    def ip_block(self) -> dict:
        rng = self.rng
        if not self.ips:
            return {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}
        ip = ipaddress.ip_address(rng.choice(self.ips))
        # an IPv6 address gets the same shapes 96 bits longer (a /24 is a /120, a /32 a /128,
        # 0.0.0.0/0 is ::/0): the pods' IPv6 addresses differ in their last bits as the IPv4
        # ones do in the tests' worlds
        d = 0 if ip.version == 4 else 96
        net24 = ipaddress.ip_network(f"{ip}/{24 + d}", strict=False)
        others = [i for i in self.ips if ipaddress.ip_address(i) in net24 and i != str(ip)]
        kind = rng.choice(
            ["24-except-32", "24-except-32", "32", "16-except-24", "wide-except", "24"]
        )
        if kind == "32":
            return {"cidr": f"{ip}/{32 + d}"}
        if kind == "24":
            return {"cidr": str(net24)}
        if kind == "24-except-32":
            pool = [str(ip)] + others
            excepts = rng.sample(pool, rng.randint(1, min(2, len(pool))))
            return {"cidr": str(net24), "except": sorted(f"{e}/{32 + d}" for e in excepts)}
        if kind == "16-except-24":
            net16 = ipaddress.ip_network(f"{ip}/{16 + d}", strict=False)
            return {"cidr": str(net16), "except": [str(net24)]}
        # everything but this pod's /24 or one pod (/32), written as 0.0.0.0/0 (::/0)
        wide = "0.0.0.0/0" if ip.version == 4 else "::/0"
        return {"cidr": wide, "except": [rng.choice([str(net24), f"{ip}/{32 + d}"])]}

    def peer(self, policy_ns: str) -> dict:
        rng = self.rng
        kind = rng.choice(["pod", "ns", "both", "ip"])
        if kind == "pod":
            return {"podSelector": self.pod_selector(policy_ns)}
        if kind == "ns":
            return {"namespaceSelector": self.ns_selector()}
        if kind == "both":
            return {"namespaceSelector": self.ns_selector(), "podSelector": self.pod_selector()}
        return {"ipBlock": self.ip_block()}

    # ports ------------------------------------------------------------------------------

    def port(self) -> dict:
        rng = self.rng
        kinds = ["number", "number", "range", "protocol"]
        if self.named:
            kinds += ["named", "named"]
        kind = rng.choice(kinds)
        if kind == "named":
            name, proto = rng.choice(self.named)
            if rng.random() < 0.15:  # the name with the other protocol: resolves to nothing
                proto = "UDP" if proto == "TCP" else "TCP"
            return self._proto({"port": name}, proto)
        if kind == "protocol":
            return {"protocol": rng.choice(["TCP", "UDP"])}
        port, proto = rng.choice(self.ports) if self.ports else (80, "TCP")
        if rng.random() < 0.15:  # the right number, the wrong protocol
            proto = "UDP" if proto == "TCP" else "TCP"
        if kind == "number":
            if rng.random() < 0.1:
                port = port + 1 if port < 65535 else port - 1  # a port nobody declares
            return self._proto({"port": port}, proto)
        start = max(1, port - rng.choice([0, 1, 5, 100]))
        end = min(65535, port + rng.choice([0, 1, 2, 1000]))
        if rng.random() < 0.15:  # a range just beside the port
            start, end = (port + 1, port + 10) if port < 65500 else (port - 10, port - 1)
        return self._proto({"port": start, "endPort": end}, proto)

    def _proto(self, entry: dict, proto: str) -> dict:
        if proto != "TCP" or self.rng.random() < 0.5:  # TCP is the default: sometimes implicit
            entry = {"protocol": proto, **entry}
        return entry

    # rules and policies -----------------------------------------------------------------

    def rule(self, peer_key: str, policy_ns: str) -> dict:
        rng = self.rng
        rule: dict = {}
        shape = rng.choice(["absent", "empty", "peers", "peers", "peers"])
        if shape == "empty":
            rule[peer_key] = []
        elif shape == "peers":
            rule[peer_key] = [self.peer(policy_ns) for _ in range(rng.choice([1, 1, 2]))]
        ports = rng.choice(["absent", "empty", "some", "some", "some"])
        if ports == "empty":
            rule["ports"] = []
        elif ports == "some":
            rule["ports"] = [self.port() for _ in range(rng.choice([1, 1, 2]))]
        return rule

    def policy(self, seed: int, i: int) -> dict:
        rng = self.rng
        ns = rng.choice(self.pod_ns)
        spec: dict = {"podSelector": self.pod_selector(ns)}
        shape = rng.choice(["ingress", "egress", "both", "both-implicit", "deny-all", "deny-all"])
        if shape == "deny-all":
            spec["podSelector"] = rng.choice([{}, {}, spec["podSelector"]])
            spec["policyTypes"] = rng.choice([["Ingress"], ["Egress"], ["Ingress", "Egress"]])
            if rng.random() < 0.3:
                spec["ingress" if "Ingress" in spec["policyTypes"] else "egress"] = []
        else:
            if shape in ("ingress", "both", "both-implicit"):
                spec["ingress"] = [self.rule("from", ns) for _ in range(rng.randint(1, 2))]
            if shape in ("egress", "both", "both-implicit"):
                spec["egress"] = [self.rule("to", ns) for _ in range(rng.randint(1, 2))]
            if shape == "ingress" and rng.random() < 0.5:
                spec["policyTypes"] = ["Ingress"]
            elif shape == "egress":
                spec["policyTypes"] = ["Egress"]
            elif shape == "both":
                spec["policyTypes"] = ["Ingress", "Egress"]
            # both-implicit: policyTypes defaulted from the egress section
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": f"random-{seed}-{i}", "namespace": ns},
            "spec": spec,
        }


def random_case(seed: int, namespaces: list[dict], pods: list[dict]) -> list[dict]:
    """1-3 valid NetworkPolicy dicts over these namespaces and pods, the same for the same seed
    and inputs (whatever their order)."""
    rng = random.Random(seed)
    gen = _Gen(rng, namespaces, pods)
    return [gen.policy(seed, i) for i in range(rng.randint(1, 3))]
