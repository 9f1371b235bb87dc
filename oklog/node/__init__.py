"""The composition root: ``root.open_node`` opens what a role (ingest, store, both)
needs on disk from a ``config.NodeConfig`` and ``root.Node`` wires and runs its
components; ``state`` defines the ``/cluster/state`` document that ``health`` and
``metrics`` report through."""
