"""The composition root: ``root.Node`` wires the components of each role (ingest,
store, both) from a ``config.NodeConfig``; ``health`` and ``metrics`` report on them."""
