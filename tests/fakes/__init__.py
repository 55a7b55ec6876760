"""In-memory stand-ins for the switch and the host, so whole pipelines and agent logic run in
unit tests without root or OVS (see oftable.py: an OpenFlow table set that runs packets)."""
