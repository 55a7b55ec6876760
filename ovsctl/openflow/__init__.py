"""The OpenFlow controller: the channel to the switch, flow sync, encoding, packet-ins.
It knows nothing of Kubernetes."""
