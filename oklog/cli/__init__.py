"""The command-line tools: one module per command (``commands`` parses the command
line and dispatches; ``forward``, ``query`` (also ``topics``), ``stream``, ``repair``
(also ``rebalance``), ``testsvc``). Each talks to nodes over HTTP or the ingest ports."""
