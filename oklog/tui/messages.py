"""Messages between the app and its widgets: small dataclasses, nothing else."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from oklog.tui.model import ClusterState


@dataclass
class StateUpdated(Message):
    """A fresh ``/cluster/state`` from the attached node."""

    node: str
    state: ClusterState
    received: float  # local clock


@dataclass
class NodeUnreachable(Message):
    """The attached node did not answer a poll."""

    node: str
    error: str
    failures: int  # consecutive
    last_contact: float | None  # local clock of the last good answer
    kind: str = "unreachable"  # or "error": it answered, but not with a state


@dataclass
class AttachNode(Message):
    """Attach the TUI to another node (its API address)."""

    addr: str


@dataclass
class QueryFinished(Message):
    """A query ended: ``outcome`` is done, partial, cancelled or error."""

    outcome: str
    records: int
    detail: str = ""
