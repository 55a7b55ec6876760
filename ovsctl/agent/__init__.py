"""The node-agent process: CNI, pod attachments, host plumbing, the reconcilers that turn
cluster changes into flows, and the agent's views. tools/ and lab/ never import it."""
