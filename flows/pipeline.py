"""Pure functions from desired state to flows. Each returns a frozenset of Flow; the controller
diffs the union against the switch. Nothing here sends, reads the clock or touches a socket."""

from __future__ import annotations

from flows import cookie, owners, regs, tables
from flows.family import FAMILIES, V4, V6, Family, family
from flows.flow import (
    CT,
    DecTTL,
    Flow,
    Goto,
    InPort,
    Move,
    OutputReg,
    Resubmit,
    SetField,
    ct_state,
    flow,
)
from flows.model import (
    SNAT_MARK,
    VIRTUAL_ROUTER_MAC,
    VXLAN_PORT,
    NodeNet,
    Overlay,
    PodPort,
    RemoteNode,
    hairpin_ip,
    link_local,
)
from flows.policy import icmp6_always_flows

PRIO_MISS = 0
PRIO_LOW = 100
PRIO_NORMAL = 200
PRIO_TUNNEL = 150  # remote pod CIDRs: below the /32s of local pods
PRIO_NO_HAIRPIN = 210  # tunnel -> tunnel is never right
PRIO_NO_ENCAP = 220  # nothing in br-int may reach a node's VXLAN port (L3Forwarding)
PRIO_RESERVED_SRC = 230  # Classifier: ovsctl's own hairpin source never comes from outside
PRIO_ALWAYS = 65000  # policy tables: what no NetworkPolicy may block (replies, the node)
CT_ZONE = 65000
# The first policy table of each direction (ClusterNetworkPolicy's Admin tier): where a packet
# enters policy evaluation, and where what no policy may block is let through first.
EGRESS_FIRST = tables.TIER_TABLES[("Admin", "egress")]
INGRESS_FIRST = tables.TIER_TABLES[("Admin", "ingress")]
HAIRPIN_ZONE = 65001


def pipeline_owner() -> str:
    return owners.Pipeline().key


def pod_owner(pod: PodPort) -> str:
    cid, _, ifname = pod.key.rpartition("/")
    return owners.Pod(cid, ifname).key


def table_miss_flows(families: tuple[Family, ...] = FAMILIES) -> frozenset[Flow]:
    """One priority-0 flow per table: drop, or continue to the next table. Drops are explicit
    flows so their counters say which table dropped a packet. Tables only IPv6 uses get theirs
    on nodes with IPv6."""
    ck = cookie.make("pipeline", pipeline_owner())
    out = set()
    for t in tables.PIPELINE:
        if t.ipv6_only and V6 not in families:
            continue
        actions = () if t.miss == "drop" else (Goto(tables.next_table(t.name).name),)
        out.add(flow(t.name, PRIO_MISS, {}, actions, ck))
    return frozenset(out)


def _arp_reply(mac: str) -> tuple:
    """Turn an ARP request into the reply from `mac` (addresses are set by the caller)."""
    return (
        Move("eth_src", "eth_dst"),
        SetField("eth_src", mac),
        SetField("arp_op", "2"),
        Move("arp_sha", "arp_tha"),
        SetField("arp_sha", mac),
    )


def arp_responder(ip: str, mac: str, ck: int) -> Flow:
    """Answer 'who has ip' with mac, out of the port the request came in by."""
    return flow(
        "ARPResponder",
        PRIO_NORMAL,
        {"protocol": "arp", "arp_tpa": ip, "arp_op": 1},
        (*_arp_reply(mac), Move("arp_spa", "arp_tpa"), SetField("arp_spa", ip), InPort()),
        ck,
    )


# Neighbor Advertisement flags (nd_reserved, the 32 bits after the ICMPv6 code and checksum):
# Router, Solicited, Override.
NA_ROUTER = 0x80000000
NA_SOLICITED = 0x40000000
NA_OVERRIDE = 0x20000000
ND_NS = 135  # Neighbor Solicitation
ND_NA = 136  # Neighbor Advertisement
ND_RS = 133  # Router Solicitation
ND_RA = 134  # Router Advertisement
ND_REDIRECT = 137
DHCPV6_SERVER_PORT = 547
ND_OPT_TLL = 2  # option type of the target link-layer address


def _na_reply(mac: str, router: bool) -> tuple:
    """Turn a Neighbor Solicitation into the (solicited, override) advertisement from `mac`,
    back to its sender; ipv6_src (the answered address) is set by the caller. The solicitation's
    source link-layer option becomes the target link-layer option: its type here, its address
    in NDReply (OVS refuses nd_tll before the packet is an advertisement)."""
    flags = NA_SOLICITED | NA_OVERRIDE | (NA_ROUTER if router else 0)
    return (
        Move("eth_src", "eth_dst"),
        SetField("eth_src", mac),
        Move("ipv6_src", "ipv6_dst"),
    ), (
        SetField("icmpv6_type", str(ND_NA)),
        SetField("icmpv6_code", "0"),
        SetField("nd_reserved", str(flags)),  # OVS prints it in decimal
        SetField("nd_options_type", str(ND_OPT_TLL)),
        Resubmit("NDReply"),
    )


def nd_responder(ip: str, mac: str, ck: int, router: bool = False) -> Flow:
    """Answer a Neighbor Solicitation for `ip` with `mac` (R flag for the gateway), out of the
    port it came in by (NDReply outputs it)."""
    head, tail = _na_reply(mac, router)
    return flow(
        "ARPResponder",
        PRIO_NORMAL,
        {"protocol": "icmp6", "icmp_type": ND_NS, "nd_target": ip},
        (*head, SetField("ipv6_src", ip), *tail),
        ck,
    )


def responder(ip: str, mac: str, ck: int, router: bool = False) -> Flow:
    """The ARP answer for an IPv4 address, the Neighbor Advertisement for an IPv6 one."""
    if family(ip) is V4:
        return arp_responder(ip, mac, ck)
    return nd_responder(ip, mac, ck, router)


def nd_flows(ck: int) -> frozenset[Flow]:
    """The node's share of Neighbor Discovery (nodes with IPv6): NDReply's one flow, a DAD
    probe (source ::) is never answered (it would tell the host its gateway address is taken),
    and what no pod may send: Router Advertisements, Redirects, DHCPv6 server replies; Neighbor
    Solicitations and Advertisements other than the ones pod_flows admits (its own addresses,
    its own MAC in the link-layer option)."""
    return frozenset(
        {
            flow(
                "NDReply",
                PRIO_NORMAL,
                {"protocol": "icmp6", "icmp_type": ND_NA},
                (Move("eth_src", "nd_tll"), InPort()),
                ck,
            ),
            flow(
                "ARPResponder",
                PRIO_NORMAL + 10,
                {"protocol": "icmp6", "ipv6_src": "::", "icmp_type": ND_NS},
                (),
                ck,
            ),
            *(
                flow("SpoofGuard", PRIO_NORMAL + 20, {"protocol": "icmp6", "icmp_type": t}, (), ck)
                for t in (ND_RA, ND_REDIRECT)
            ),
            flow(
                "SpoofGuard",
                PRIO_NORMAL + 20,
                {"protocol": "udp6", "tp_src": DHCPV6_SERVER_PORT},
                (),
                ck,
            ),
            *(
                flow("SpoofGuard", PRIO_NORMAL + 5, {"protocol": "icmp6", "icmp_type": t}, (), ck)
                for t in (ND_NS, ND_NA)
            ),
        }
    )


def _gw(node: NodeNet, fam: Family) -> str:
    """The gateway's address in family `fam` (gw_ip itself for its own family)."""
    return node.gw_ip if node.gw_ip and family(node.gw_ip) is fam else node.gw_ip_of(fam)


def _node_ips(node: NodeNet, fam: Family) -> set[str]:
    """The node's own addresses in family `fam` (node_ip, the tunnel endpoint, among them)."""
    out = {a for a in node.node_ips if family(a) is fam}
    if node.node_ip and family(node.node_ip) is fam:
        out.add(node.node_ip)
    return out


def gateway_flows(node: NodeNet) -> frozenset[Flow]:
    """The gateway internal port: packets from the host stack, ARP (IPv4) and Neighbor
    Solicitations (IPv6, answered as a router) for the gateway addresses, and delivery of
    packets addressed to the gateway MAC (to the host, and out of the node)."""
    ck = cookie.make("pipeline", pipeline_owner())
    reg, val = regs.PKT_SOURCE.match(regs.FROM_GATEWAY)
    return frozenset(
        {
            flow(
                "Classifier",
                PRIO_NORMAL,
                {"in_port": node.gw_ofport},
                (SetField(reg, val), Goto("ARPResponder")),
                ck,
            ),
            *(responder(_gw(node, fam), node.gw_mac, ck, router=True) for fam in node.families),
            # the host's own link-local address on the gateway port (EUI-64 of its MAC)
            *(
                [nd_responder(link_local(node.gw_mac), node.gw_mac, ck, router=True)]
                if V6 in node.families
                else []
            ),
            l2_flow(node.gw_mac, node.gw_ofport, ck),
            *reserved_source_flows(node, node.gw_ofport, ck),
        }
    )


def l2_flow(mac: str, ofport: int, ck: int) -> Flow:
    """Destination MAC -> output port (in reg2); every output passes ConntrackCommit."""
    reg, val = regs.OUT_PORT.match(ofport)
    return flow(
        "L2Forwarding",
        PRIO_NORMAL,
        {"dl_dst": mac},
        (SetField(reg, val), Goto("ConntrackCommit")),
        ck,
    )


def conntrack_flows(node: NodeNet) -> frozenset[Flow]:
    """Stateful policy: every IP packet (each family of the node) goes through conntrack once
    on its way in. Replies, established and related connections skip the policy tables; new
    connections that pass them are committed just before output. Traffic between a pod and its
    own node is always allowed."""
    ck = cookie.make("pipeline", pipeline_owner())
    out = {flow("Output", PRIO_NORMAL, {}, (OutputReg(f"reg{regs.OUT_PORT.reg}"),), ck)}
    for fam in node.families:
        out |= _conntrack_family(node, fam, ck)
    return frozenset(out)


def _conntrack_family(node: NodeNet, fam: Family, ck: int) -> set[Flow]:
    est, est_val = regs.ESTABLISHED.match(1)
    gw_reg, gw_val = regs.PKT_SOURCE.match(regs.FROM_GATEWAY)
    ip = {"protocol": fam.eth}
    gw_ip = _gw(node, fam)
    node_ips = _node_ips(node, fam)
    out = {
        flow("Conntrack", PRIO_NORMAL, ip, (CT(CT_ZONE, table="ConntrackState", nat=""),), ck),
        flow(
            "HairpinUnSNAT",
            PRIO_NORMAL,
            {**ip, fam.dst: hairpin_ip(fam)},
            (CT(HAIRPIN_ZONE, table="Conntrack", nat=""),),
            ck,
        ),
        flow(
            "ConntrackState",
            PRIO_NORMAL + 10,
            {**ip, "ct_state": ct_state(inv=True, trk=True)},
            (),
            ck,
        ),
        # Only connections that saw a reply skip policy: a committed connection whose reply
        # never came (-new-est) is evaluated again, so its retries obey a policy change.
        *(
            flow(
                "ConntrackState",
                prio,
                {**ip, "ct_state": state},
                (SetField(est, est_val), Goto("L3Forwarding")),
                ck,
            )
            for prio, state in (
                (PRIO_NORMAL, ct_state(est=True, trk=True)),
                (PRIO_NORMAL - 1, ct_state(rel=True, trk=True)),
            )
        ),
        # A pod may always reach its own node, whatever its namespace's NetworkPolicies say
        # (kubelet, node-local services): in EgressRule, so the Admin tier's rules (`nodes` and
        # `networks` peers) still see it, as the API's rules of every other destination do.
        *(
            flow("EgressRule", PRIO_ALWAYS, {**ip, fam.dst: dst}, (Goto("L3Forwarding"),), ck)
            for dst in {gw_ip} | node_ips
        ),
        flow(INGRESS_FIRST, PRIO_ALWAYS, {est: est_val}, (Goto("L2Forwarding"),), ck),
        # The node itself (kubelet probes, host processes) may always reach its pods; other
        # sources behind the gateway (NodePort clients whose IP is kept) meet the policies.
        *(
            flow(
                INGRESS_FIRST,
                PRIO_ALWAYS - 1,
                {**ip, gw_reg: gw_val, fam.src: src},
                (Goto("L2Forwarding"),),
                ck,
            )
            for src in {gw_ip} | node_ips
        ),
        # NodePort (externalTrafficPolicy Cluster): a new connection that EndpointDNAT marked
        # is SNATed to the gateway IP in the hairpin zone, so the endpoint's replies come back
        # through this node; later packets of the connection get the same SNAT, replies to the
        # gateway IP are un-SNATed before the Service's DNAT is undone.
        flow(
            "HairpinSNAT",
            PRIO_NORMAL,
            {**ip, "ct_state": ct_state(new=True, trk=True), "ct_mark": _mark()},
            (CT(HAIRPIN_ZONE, table=EGRESS_FIRST, commit=True, nat=f"src={gw_ip}"),),
            ck,
        ),
        flow(
            "ConntrackState",
            PRIO_NORMAL + 6,
            {**ip, "ct_state": ct_state(est=True, rpl=False, trk=True), "ct_mark": _mark()},
            (SetField(est, est_val), CT(HAIRPIN_ZONE, table="L3Forwarding", nat="")),
            ck,
        ),
        flow(
            "HairpinUnSNAT",
            PRIO_NORMAL,
            {**ip, fam.dst: gw_ip},
            (CT(HAIRPIN_ZONE, table="Conntrack", nat=""),),
            ck,
        ),
        flow(
            "ConntrackCommit",
            PRIO_NORMAL,
            {**ip, "ct_state": ct_state(new=True, trk=True)},
            (CT(CT_ZONE, commit=True), Goto("Output")),
            ck,
        ),
    }
    return out


# Frames without an 802.1Q header (OVS parses through a tag, so `ip` alone matches tagged IPv4).
UNTAGGED = {"vlan_tci": "0x0000/0x1fff"}


def no_encap_flow(node_ip: str, ck: int) -> Flow:
    """Drop UDP to a node's VXLAN port from anything in br-int: a pod that reached it (directly,
    or through a Service DNATed to it) could hand the tunnel a packet of its own making, with any
    inner source, and the receiving node would take it as another node's. In L3Forwarding,
    which every forwarded packet passes after DNAT, whatever its connection state; real
    tunnel traffic never goes through this pipeline (the tunnel port encapsulates it). The
    underlay is IPv4 (the tunnel endpoint's family)."""
    fam = family(node_ip)
    return flow(
        "L3Forwarding",
        PRIO_NO_ENCAP,
        {"protocol": fam.proto("udp"), fam.dst: node_ip, "tp_dst": VXLAN_PORT},
        (),
        ck,
    )


def _mark() -> str:
    return f"{SNAT_MARK:#x}/{SNAT_MARK:#x}"


def node_flows(node: NodeNet, overlay: Overlay | None = None) -> frozenset[Flow]:
    """Everything that belongs to the node itself, not to any pod."""
    ck = cookie.make("pipeline", pipeline_owner())
    out = table_miss_flows(node.families) | gateway_flows(node) | conntrack_flows(node)
    if V6 in node.families:
        out |= nd_flows(ck)
    if node.node_ip:  # pods never reach this node's own VXLAN port either
        out |= {no_encap_flow(node.node_ip, ck)}
    if overlay is not None:
        out |= overlay_flows(node, overlay)
    if V6 in node.families:  # ND and path-MTU discovery: no policy blocks them (policy.py)
        out |= icmp6_always_flows(PRIO_ALWAYS, cookie.make("pipeline", pipeline_owner()))
    return out


def reserved_source_flows(node: NodeNet, port: int, ck: int) -> set[Flow]:
    """Only HairpinSNAT makes a packet from the hairpin address, and ingress policy admits it
    as the pod reaching itself (flows/policy.py): one from the host (the gateway) or another
    node (the tunnel) with that source is forged, and dropped where it enters."""
    return {
        flow(
            "Classifier",
            PRIO_RESERVED_SRC,
            {"protocol": fam.eth, "in_port": port, fam.src: hairpin_ip(fam)},
            (),
            ck,
        )
        for fam in node.families
    }


def overlay_flows(node: NodeNet, overlay: Overlay) -> frozenset[Flow]:
    """The tunnel side of the node. What the tunnel port accepts is each remote node's own
    Classifier flow (remote_node_flows): there is no catch-all, so a packet from any other
    outer source meets the Classifier's drop. The host asks ARP (IPv4) or Neighbor
    Solicitations (IPv6) for remote pods (its route to the cluster CIDR points at the gateway);
    they are answered with a virtual router MAC."""
    ck = cookie.make("pipeline", pipeline_owner())
    gw_reg, gw_val = regs.PKT_SOURCE.match(regs.FROM_GATEWAY)
    out = reserved_source_flows(node, overlay.tun_ofport, ck)
    for cidr in overlay.cluster_cidrs:
        if family(cidr) is V4:
            out.add(
                flow(
                    "ARPResponder",
                    PRIO_LOW,
                    {"protocol": "arp", gw_reg: gw_val, "arp_tpa": cidr, "arp_op": 1},
                    (
                        *_arp_reply(VIRTUAL_ROUTER_MAC),
                        # swap SPA and TPA through a scratch register: we answer for the asked IP
                        Move("arp_tpa", regs.SCRATCH.nxm),
                        Move("arp_spa", "arp_tpa"),
                        Move(regs.SCRATCH.nxm, "arp_spa"),
                        InPort(),
                    ),
                    ck,
                )
            )
        else:
            head, tail = _na_reply(VIRTUAL_ROUTER_MAC, router=True)
            out.add(
                flow(
                    "ARPResponder",
                    PRIO_LOW,
                    {"protocol": "icmp6", gw_reg: gw_val, "icmp_type": ND_NS, "nd_target": cidr},
                    # we answer for the asked address: the target becomes the source
                    (*head, Move("nd_target", "ipv6_src"), *tail),
                    ck,
                )
            )
    return frozenset(out)


def node_owner(remote: RemoteNode) -> str:
    return owners.Node(remote.name).key


def remote_node_flows(node: NodeNet, overlay: Overlay, remote: RemoteNode) -> frozenset[Flow]:
    """Pods of another node: into the tunnel to its IP, addressed to its gateway MAC. The
    source pod IP is kept (no NAT); the far side routes to the pod and decrements the TTL (hop
    limit). What arrives from the tunnel for that node is dropped, never sent back into the
    tunnel.

    The tunnel accepts only this node's packets: outer source (tun_src) its IP (the IPv4
    underlay), untagged IPv4 or IPv6 (each family of its pod CIDRs that this node has too; the
    overlay carries nothing else), so a forged or other inner frame cannot reach a pod. Nothing in br-int may send to its
    VXLAN port."""
    ck = cookie.make("node", node_owner(remote))
    reg, val = regs.PKT_SOURCE.match(regs.FROM_TUNNEL)
    out = {no_encap_flow(remote.node_ip, ck), l2_flow(remote.gw_mac, overlay.tun_ofport, ck)}
    for cidr in remote.pod_cidrs:
        fam = family(cidr)
        if fam not in node.families:  # a family this node does not route: its tunnel drops it
            continue
        ip = {"protocol": fam.eth}
        out |= {
            flow(
                "Classifier",
                PRIO_NORMAL,
                {**ip, "tun_src": remote.node_ip, "in_port": overlay.tun_ofport, **UNTAGGED},
                (SetField(reg, val), Goto("HairpinUnSNAT")),
                ck,
            ),
            flow(
                "L3Forwarding",
                PRIO_TUNNEL,
                {**ip, fam.dst: cidr},
                (
                    SetField("eth_src", node.gw_mac),
                    SetField("eth_dst", remote.gw_mac),
                    SetField("tun_dst", remote.node_ip),
                    Goto(INGRESS_FIRST),
                ),
                ck,
            ),
            flow("L3Forwarding", PRIO_NO_HAIRPIN, {**ip, reg: val, fam.dst: cidr}, (), ck),
        }
    return frozenset(out)


def hairpin_flows(pod: PodPort, ck: int) -> tuple[Flow, ...]:
    """A pod that reaches itself through a Service: after DNAT the packet goes from the pod to
    the pod. Its source becomes the hairpin address of its family (SNAT in its own zone, so the
    Service's DNAT entry stays), later packets of the connection get the same SNAT, and the
    output goes back out of the port it came in by."""
    est, est_val = regs.ESTABLISHED.match(1)
    out_reg, out_val = regs.OUT_PORT.match(pod.ofport)
    hp_reg, hp_val = regs.HAIRPIN.match(1)
    out = []
    for ip in pod.ips:
        fam = family(ip)
        self_to_self = {"protocol": fam.eth, fam.src: ip, fam.dst: ip}
        out += [
            flow(
                "HairpinSNAT",
                PRIO_NORMAL,
                self_to_self,
                (
                    SetField(hp_reg, hp_val),  # registers survive the recirculation
                    CT(
                        HAIRPIN_ZONE,
                        table=EGRESS_FIRST,
                        commit=True,
                        nat=f"src={hairpin_ip(fam)}",
                    ),
                ),
                ck,
            ),
            flow(
                "ConntrackState",
                PRIO_NORMAL + 5,
                {**self_to_self, "ct_state": ct_state(est=True, trk=True)},
                (SetField(est, est_val), CT(HAIRPIN_ZONE, table="L3Forwarding", nat="")),
                ck,
            ),
        ]
    out.append(
        flow("Output", PRIO_NORMAL + 10, {"in_port": pod.ofport, out_reg: out_val}, (InPort(),), ck)
    )
    return tuple(out)


def _pod_ipv4_flows(node: NodeNet, pod: PodPort, ip: str, ck: int) -> set[Flow]:
    port = pod.ofport
    return {
        # Only untagged IPv4 and ARP from the pod's own addresses: everything else
        # (other ethertypes, 802.1Q-tagged frames) meets SpoofGuard's drop.
        flow(
            "SpoofGuard",
            PRIO_NORMAL,
            {"protocol": "ip", "in_port": port, **UNTAGGED, "dl_src": pod.mac, "nw_src": ip},
            (Goto("ARPResponder"),),
            ck,
        ),
        flow(
            "SpoofGuard",
            PRIO_NORMAL,
            {
                "protocol": "arp",
                "in_port": port,
                **UNTAGGED,
                "dl_src": pod.mac,
                "arp_spa": ip,
                "arp_sha": pod.mac,
            },
            (Goto("ARPResponder"),),
            ck,
        ),
        arp_responder(ip, pod.mac, ck),
    }


ZERO_MAC = "00:00:00:00:00:00"  # nd_sll / nd_tll of a solicitation / advertisement without one


def _pod_ipv6_flows(node: NodeNet, pod: PodPort, ip: str, ck: int) -> set[Flow]:
    """IPv6 from the pod: untagged, its MAC, from its global address or its MAC-derived
    link-local (Router Solicitations and MLD reports among them). Its Neighbor Solicitations
    pass only with its own MAC in their source link-layer option, or none; its Neighbor
    Advertisements only for its own addresses, with its own MAC as the target link-layer
    address, or none (above the node's drop of every other NS/NA, below its drop of Router
    Advertisements, Redirects and DHCPv6 replies). Solicitations for both its addresses are
    answered here."""
    port = pod.ofport
    base = {"in_port": port, **UNTAGGED, "dl_src": pod.mac}
    own = (ip, link_local(pod.mac))
    out = {nd_responder(a, pod.mac, ck) for a in own}
    for src in own:
        out.add(
            flow(
                "SpoofGuard",
                PRIO_NORMAL,
                {"protocol": "ipv6", **base, "ipv6_src": src},
                (Goto("ARPResponder"),),
                ck,
            )
        )
        nd = {"protocol": "icmp6", **base, "ipv6_src": src}
        for mac in (pod.mac, ZERO_MAC):
            out.add(
                flow(
                    "SpoofGuard",
                    PRIO_NORMAL + 10,
                    {**nd, "icmp_type": ND_NS, "nd_sll": mac},
                    (Goto("ARPResponder"),),
                    ck,
                )
            )
            for target in own:
                out.add(
                    flow(
                        "SpoofGuard",
                        PRIO_NORMAL + 10,
                        {**nd, "icmp_type": ND_NA, "nd_target": target, "nd_tll": mac},
                        (Goto("ARPResponder"),),
                        ck,
                    )
                )
    return out


def pod_flows(node: NodeNet, pod: PodPort) -> frozenset[Flow]:
    """The flows one local pod attachment owns: classifier, spoof guard (IP, MAC, ARP, ND),
    ARP / Neighbor Advertisement answer for its IPs, routed delivery (MAC rewrite + TTL or hop
    limit) and L2 output to its port."""
    ck = cookie.make("pod", pod_owner(pod))
    reg, val = regs.PKT_SOURCE.match(regs.FROM_POD)
    out = {
        flow(
            "Classifier",
            PRIO_NORMAL,
            {"in_port": pod.ofport},
            (SetField(reg, val), Goto("SpoofGuard")),
            ck,
        ),
        l2_flow(pod.mac, pod.ofport, ck),
        *hairpin_flows(pod, ck),
    }
    for ip in pod.ips:
        fam = family(ip)
        out |= (
            _pod_ipv4_flows(node, pod, ip, ck) if fam is V4 else _pod_ipv6_flows(node, pod, ip, ck)
        )
        # Routed to this pod: addressed to the gateway MAC (from another subnet, or from a
        # tunnel whose sender addressed this node's gateway MAC).
        out.add(
            flow(
                "L3Forwarding",
                PRIO_NORMAL,
                {"protocol": fam.eth, "dl_dst": node.gw_mac, fam.dst: ip},
                (
                    SetField("eth_src", node.gw_mac),
                    SetField("eth_dst", pod.mac),
                    DecTTL(),
                    Goto(INGRESS_FIRST),
                ),
                ck,
            )
        )
    return frozenset(out)
