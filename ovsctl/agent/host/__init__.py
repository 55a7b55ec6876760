"""The only code that touches the host: netlink (pyroute2), iptables, the OVSDB IDL."""
