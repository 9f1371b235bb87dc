"""``oklog tui``: the Textual dashboard, an HTTP client of any node's API.

app.py          the thin App and ``make_app`` (shared by the CLI and the tests)
client.py       httpx I/O: cluster state, query stream, tail stream
model.py        state parsing, rates, warnings, units (pure)
messages.py     message dataclasses
stub.py         a fixed, deterministic client for snapshots and screenshots
widgets/        one widget per module
oklog.tcss      styles
"""
