"""The node-agent process: CNI, pod attachments, host plumbing, the reconcilers that turn
cluster changes into flows, and the agent's views. tools/ and lab/ never import it."""

# The logger of every line the agent's parts write: the name they had before the Agent class
# was split into parts (operators filter on it), so no log line changed with the split.
LOGGER = "ovsctl.agent.agent"
