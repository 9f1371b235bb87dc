"""Cluster membership: SWIM gossip as a pure state machine (``swim``), its wire
format (``codec``), the keyring (``keyring``), a deterministic simulator (``sim``),
and the trio UDP driver (``transport.Gossip``). Importing the package or its pure
modules does not import trio."""
