"""Pure functions from desired state to flows. Each returns a frozenset of Flow; the controller
diffs the union against the switch. Nothing here sends, reads the clock or touches a socket."""

from __future__ import annotations

from flows import cookie, owners, regs, tables
from flows.family import V6
from flows.flow import CT, DecTTL, Flow, Goto, InPort, Move, OutputReg, SetField, ct_state, flow
from flows.model import (
    HAIRPIN_IP,
    SNAT_MARK,
    VIRTUAL_ROUTER_MAC,
    VXLAN_PORT,
    NodeNet,
    Overlay,
    PodPort,
    RemoteNode,
)
from flows.policy import icmp6_always_flows

PRIO_MISS = 0
PRIO_LOW = 100
PRIO_NORMAL = 200
PRIO_TUNNEL = 150  # remote pod CIDRs: below the /32s of local pods
PRIO_NO_HAIRPIN = 210  # tunnel -> tunnel is never right
PRIO_NO_ENCAP = 220  # nothing in br-int may reach a node's VXLAN port (L3Forwarding)
PRIO_ALWAYS = 65000  # policy tables: what no NetworkPolicy may block (replies, the node)
CT_ZONE = 65000
HAIRPIN_ZONE = 65001


def pipeline_owner() -> str:
    return owners.Pipeline().key


def pod_owner(pod: PodPort) -> str:
    cid, _, ifname = pod.key.rpartition("/")
    return owners.Pod(cid, ifname).key


def table_miss_flows() -> frozenset[Flow]:
    """One priority-0 flow per table: drop, or continue to the next table. Drops are explicit
    flows so their counters say which table dropped a packet."""
    ck = cookie.make("pipeline", pipeline_owner())
    out = set()
    for t in tables.PIPELINE:
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


def gateway_flows(node: NodeNet) -> frozenset[Flow]:
    """The gateway internal port: packets from the host stack, ARP for the gateway address,
    and delivery of packets addressed to the gateway MAC (to the host, and out of the node)."""
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
            arp_responder(node.gw_ip, node.gw_mac, ck),
            l2_flow(node.gw_mac, node.gw_ofport, ck),
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
    """Stateful policy: every IPv4 packet goes through conntrack once on its way in. Replies,
    established and related connections skip the policy tables; new connections that pass them
    are committed just before output. Traffic between a pod and its own node is always allowed."""
    ck = cookie.make("pipeline", pipeline_owner())
    est, est_val = regs.ESTABLISHED.match(1)
    gw_reg, gw_val = regs.PKT_SOURCE.match(regs.FROM_GATEWAY)
    ip = {"protocol": "ip"}
    out = {
        flow("Conntrack", PRIO_NORMAL, ip, (CT(CT_ZONE, table="ConntrackState", nat=""),), ck),
        flow(
            "HairpinUnSNAT",
            PRIO_NORMAL,
            {**ip, "nw_dst": HAIRPIN_IP},
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
        flow("EgressRule", PRIO_ALWAYS, {**ip, "nw_dst": node.gw_ip}, (Goto("L3Forwarding"),), ck),
        flow("IngressRule", PRIO_ALWAYS, {est: est_val}, (Goto("L2Forwarding"),), ck),
        # The node itself (kubelet probes, host processes) may always reach its pods; other
        # sources behind the gateway (NodePort clients whose IP is kept) meet the policies.
        *(
            flow(
                "IngressRule",
                PRIO_ALWAYS - 1,
                {**ip, gw_reg: gw_val, "nw_src": src},
                (Goto("L2Forwarding"),),
                ck,
            )
            for src in {node.gw_ip, node.node_ip} - {""}
        ),
        # NodePort (externalTrafficPolicy Cluster): a new connection that EndpointDNAT marked
        # is SNATed to the gateway IP in the hairpin zone, so the endpoint's replies come back
        # through this node; later packets of the connection get the same SNAT, replies to the
        # gateway IP are un-SNATed before the Service's DNAT is undone.
        flow(
            "HairpinSNAT",
            PRIO_NORMAL,
            {**ip, "ct_state": ct_state(new=True, trk=True), "ct_mark": _mark()},
            (CT(HAIRPIN_ZONE, table="EgressRule", commit=True, nat=f"src={node.gw_ip}"),),
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
            {**ip, "nw_dst": node.gw_ip},
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
        flow("Output", PRIO_NORMAL, {}, (OutputReg(f"reg{regs.OUT_PORT.reg}"),), ck),
    }
    if node.node_ip:
        out.add(
            flow(
                "EgressRule",
                PRIO_ALWAYS,
                {**ip, "nw_dst": node.node_ip},
                (Goto("L3Forwarding"),),
                ck,
            )
        )
    return frozenset(out)


# Frames without an 802.1Q header (OVS parses through a tag, so `ip` alone matches tagged IPv4).
UNTAGGED = {"vlan_tci": "0x0000/0x1fff"}


def no_encap_flow(node_ip: str, ck: int) -> Flow:
    """Drop UDP to a node's VXLAN port from anything in br-int: a pod that reached it (directly,
    or through a Service DNATed to it) could hand the tunnel a packet of its own making, with any
    inner source, and the receiving node would take it as another node's. In L3Forwarding,
    which every forwarded IPv4 packet passes after DNAT, whatever its connection state; real
    tunnel traffic never goes through this pipeline (the tunnel port encapsulates it)."""
    return flow(
        "L3Forwarding",
        PRIO_NO_ENCAP,
        {"protocol": "udp", "nw_dst": node_ip, "tp_dst": VXLAN_PORT},
        (),
        ck,
    )


def _mark() -> str:
    return f"{SNAT_MARK:#x}/{SNAT_MARK:#x}"


def node_flows(node: NodeNet, overlay: Overlay | None = None) -> frozenset[Flow]:
    """Everything that belongs to the node itself, not to any pod."""
    out = table_miss_flows() | gateway_flows(node) | conntrack_flows(node)
    if node.node_ip:  # pods never reach this node's own VXLAN port either
        out |= {no_encap_flow(node.node_ip, cookie.make("pipeline", pipeline_owner()))}
    if overlay is not None:
        out |= overlay_flows(node, overlay)
    if V6 in node.families:  # ND and path-MTU discovery: no policy blocks them (policy.py)
        out |= icmp6_always_flows(PRIO_ALWAYS, cookie.make("pipeline", pipeline_owner()))
    return out


def overlay_flows(node: NodeNet, overlay: Overlay) -> frozenset[Flow]:
    """The tunnel side of the node. What the tunnel port accepts is each remote node's own
    Classifier flow (remote_node_flows): there is no catch-all, so a packet from any other
    outer source meets the Classifier's drop. The host asks ARP for remote pods (its route to the cluster
    CIDR points at the gateway); they are answered with a virtual router MAC."""
    ck = cookie.make("pipeline", pipeline_owner())
    gw_reg, gw_val = regs.PKT_SOURCE.match(regs.FROM_GATEWAY)
    return frozenset(
        {
            flow(
                "ARPResponder",
                PRIO_LOW,
                {"protocol": "arp", gw_reg: gw_val, "arp_tpa": overlay.cluster_cidr, "arp_op": 1},
                (
                    *_arp_reply(VIRTUAL_ROUTER_MAC),
                    # swap SPA and TPA through a scratch register: we answer for the asked IP
                    Move("arp_tpa", regs.SCRATCH.nxm),
                    Move("arp_spa", "arp_tpa"),
                    Move(regs.SCRATCH.nxm, "arp_spa"),
                    InPort(),
                ),
                ck,
            ),
        }
    )


def node_owner(remote: RemoteNode) -> str:
    return owners.Node(remote.name).key


def remote_node_flows(node: NodeNet, overlay: Overlay, remote: RemoteNode) -> frozenset[Flow]:
    """Pods of another node: into the tunnel to its IP, addressed to its gateway MAC. The
    source pod IP is kept (no NAT); the far side routes to the pod and decrements the TTL.
    What arrives from the tunnel for that node is dropped, never sent back into the tunnel.

    The tunnel accepts only this node's packets: outer source (tun_src) its IP, untagged IPv4
    (the overlay carries nothing else until dual-stack), so a forged or non-IPv4 inner frame
    cannot reach a pod. Nothing in br-int may send to its VXLAN port."""
    ck = cookie.make("node", node_owner(remote))
    reg, val = regs.PKT_SOURCE.match(regs.FROM_TUNNEL)
    return frozenset(
        {
            flow(
                "Classifier",
                PRIO_NORMAL,
                {
                    "protocol": "ip",
                    "tun_src": remote.node_ip,
                    "in_port": overlay.tun_ofport,
                    **UNTAGGED,
                },
                (SetField(reg, val), Goto("HairpinUnSNAT")),
                ck,
            ),
            no_encap_flow(remote.node_ip, ck),
            flow(
                "L3Forwarding",
                PRIO_TUNNEL,
                {"protocol": "ip", "nw_dst": remote.pod_cidr},
                (
                    SetField("eth_src", node.gw_mac),
                    SetField("eth_dst", remote.gw_mac),
                    SetField("tun_dst", remote.node_ip),
                    Goto("IngressRule"),
                ),
                ck,
            ),
            l2_flow(remote.gw_mac, overlay.tun_ofport, ck),
            flow(
                "L3Forwarding",
                PRIO_NO_HAIRPIN,
                {"protocol": "ip", reg: val, "nw_dst": remote.pod_cidr},
                (),
                ck,
            ),
        }
    )


def hairpin_flows(pod: PodPort, ck: int) -> tuple[Flow, ...]:
    """A pod that reaches itself through a Service: after DNAT the packet goes from the pod to
    the pod. Its source becomes HAIRPIN_IP (SNAT in its own zone, so the Service's DNAT entry
    stays), later packets of the connection get the same SNAT, and the output goes back out of
    the port it came in by."""
    est, est_val = regs.ESTABLISHED.match(1)
    out_reg, out_val = regs.OUT_PORT.match(pod.ofport)
    self_to_self = {"protocol": "ip", "nw_src": pod.ip, "nw_dst": pod.ip}
    return (
        flow(
            "HairpinSNAT",
            PRIO_NORMAL,
            self_to_self,
            (CT(HAIRPIN_ZONE, table="EgressRule", commit=True, nat=f"src={HAIRPIN_IP}"),),
            ck,
        ),
        flow(
            "ConntrackState",
            PRIO_NORMAL + 5,
            {**self_to_self, "ct_state": ct_state(est=True, trk=True)},
            (SetField(est, est_val), CT(HAIRPIN_ZONE, table="L3Forwarding", nat="")),
            ck,
        ),
        flow(
            "Output", PRIO_NORMAL + 10, {"in_port": pod.ofport, out_reg: out_val}, (InPort(),), ck
        ),
    )


def pod_flows(node: NodeNet, pod: PodPort) -> frozenset[Flow]:
    """The flows one local pod attachment owns: classifier, spoof guard (IP, MAC, ARP), ARP
    answer for its IP, routed delivery (MAC rewrite + TTL) and L2 output to its port."""
    ck = cookie.make("pod", pod_owner(pod))
    reg, val = regs.PKT_SOURCE.match(regs.FROM_POD)
    port = pod.ofport
    return frozenset(
        {
            flow(
                "Classifier",
                PRIO_NORMAL,
                {"in_port": port},
                (SetField(reg, val), Goto("SpoofGuard")),
                ck,
            ),
            # Only untagged IPv4 and ARP from the pod's own addresses: everything else
            # (IPv6, other ethertypes, 802.1Q-tagged frames) meets SpoofGuard's drop.
            flow(
                "SpoofGuard",
                PRIO_NORMAL,
                {
                    "protocol": "ip",
                    "in_port": port,
                    **UNTAGGED,
                    "dl_src": pod.mac,
                    "nw_src": pod.ip,
                },
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
                    "arp_spa": pod.ip,
                    "arp_sha": pod.mac,
                },
                (Goto("ARPResponder"),),
                ck,
            ),
            arp_responder(pod.ip, pod.mac, ck),
            # Routed to this pod: addressed to the gateway MAC (from another subnet, or from a
            # tunnel whose sender addressed this node's gateway MAC).
            flow(
                "L3Forwarding",
                PRIO_NORMAL,
                {"protocol": "ip", "dl_dst": node.gw_mac, "nw_dst": pod.ip},
                (
                    SetField("eth_src", node.gw_mac),
                    SetField("eth_dst", pod.mac),
                    DecTTL(),
                    Goto("IngressRule"),
                ),
                ck,
            ),
            l2_flow(pod.mac, port, ck),
            *hairpin_flows(pod, ck),
        }
    )
