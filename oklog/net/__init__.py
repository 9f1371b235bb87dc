"""Server and client plumbing shared by every role: the HTTP server (``http``),
membership proofs, client tokens and roles (``auth``), TLS contexts (``tls``)."""
