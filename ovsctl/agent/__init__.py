"""The node-agent process: CNI, pod attachments, host plumbing, the reconcilers that turn
cluster changes into flows, and the agent's views. tools/ and lab/ never import it."""

# The logger of every line the agent's parts write: the name the agent's lines have always
# had (operators filter on it), so no log line changed when the agent became a package.
LOGGER = "ovsctl.agent"
