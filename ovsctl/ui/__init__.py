"""`ovsctl ui`: a local, read-only web page of the pipeline, the reachability matrix, traces and
the topology, for one node or a lab (docs/ui.md). server.py serves it, api.py makes the JSON
documents, data.py reads the nodes, pipeline.py turns flows into the pipeline graph, draw.py
lays the graphs out with Graphviz."""
