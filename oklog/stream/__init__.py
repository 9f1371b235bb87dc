"""Live tail: the ingest write-path tap and the node's stream endpoints (``server``)."""
