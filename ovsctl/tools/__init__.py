"""Operator commands over the agent's views and OVS: flows, status, trace, reachability."""
