"""The Textual app: thin. Polls the attached node, hands the state to the views.

    ┌ StatusBar ─ attached node, members, warnings, freshness ─────────────┐
    │ UnreachableBanner (only while the node does not answer)              │
    │ TabbedContent: Cluster │ Pipeline │ Query │ Tail                      │
    │ Footer                                                               │
    └──────────────────────────────────────────────────────────────────────┘

All network I/O runs in workers: the poll loop here (exclusive group "poll"), the
query and tail streams in their views. When the attached node stops answering
(``SWITCH_AFTER`` polls in a row), the app asks the members that were alive in
its last state, and attaches to the first that answers, with a notice. Each poll asks the attached node for its
state, then every other live member that the state gives no figures for (its own
``GET /cluster/state``, concurrently, bounded by ``PEER_TIMEOUT``), so the
Pipeline view has a card per node. ``make_app`` builds the app for the CLI and
the tests alike; tests and screenshots inject a client factory and a clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, TabbedContent, TabPane

from oklog.node.state import Pipeline
from oklog.tui.client import DEFAULT_NODE, ApiError, Client, ClientError, NodeClient
from oklog.tui.messages import AttachNode, NodeUnreachable, QueryFinished, StateUpdated
from oklog.tui.model import (
    ClusterState,
    History,
    Member,
    duration,
    parse_state,
    peers_to_fetch,
    with_pipelines,
)
from oklog.tui.widgets.banner import UnreachableBanner
from oklog.tui.widgets.cluster import ClusterView
from oklog.tui.widgets.help import HelpScreen
from oklog.tui.widgets.pipeline import PipelineView
from oklog.tui.widgets.query import QueryView
from oklog.tui.widgets.statusbar import StatusBar
from oklog.tui.widgets.tail import TailView

DEFAULT_REFRESH = 2.0
DEFAULT_MAX_LINES = 10_000
PEER_TIMEOUT = 1.5  # at most this long for another member's figures, per poll
PEER_STALE = 5.0  # a member that missed a poll keeps its last figures this long (at least 3 polls)
SWITCH_AFTER = 2  # failed polls of the attached node before switching to a live member


class OklogApp(App[None]):
    CSS_PATH = "oklog.tcss"
    TITLE = "oklog"
    BINDINGS = [
        Binding("1", "view('cluster')", "Cluster"),
        Binding("2", "view('pipeline')", "Pipeline"),
        Binding("3", "view('query')", "Query"),
        Binding("4", "view('tail')", "Tail"),
        Binding("r", "refresh", "Refresh"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self,
        node: str,
        refresh: float,
        client_factory: Callable[[str], Client],
        clock: Callable[[], float] = time.time,
        max_lines: int = DEFAULT_MAX_LINES,
        auto_switch: bool = True,
    ) -> None:
        super().__init__()
        self.auto_switch = auto_switch
        self.switching = False
        self.node = node
        self.refresh_interval = max(0.05, refresh)
        self.client_factory = client_factory
        self.client: Client = client_factory(node)
        self.clock = clock
        self.max_lines = max_lines
        self.state: ClusterState | None = None
        self.histories: dict[str, History] = {}
        self.failures = 0
        self.last_contact: float | None = None
        self.polls = 0  # answers received (for tests)
        self.peers: dict[str, Client] = {}  # api address → client, for other members' figures
        self.peer_figures: dict[str, tuple[Pipeline, float]] = {}  # member id → (pipeline, local time)
        self._wake = asyncio.Event()

    def compose(self) -> ComposeResult:
        # Kept as attributes: app.query_one() looks at the *current* screen, which
        # is the help or save dialog while one is open.
        self.statusbar = StatusBar(self.node, id="statusbar")
        self.banner = UnreachableBanner(id="banner")
        self.banner.display = False
        self.cluster_view = ClusterView()
        self.pipeline_view = PipelineView()
        self.query_view = QueryView(self.max_lines)
        self.tail_view = TailView(self.max_lines)
        yield self.statusbar
        yield self.banner
        with TabbedContent(initial="cluster", id="views") as self.tabs:
            with TabPane("1 Cluster", id="cluster"):
                yield self.cluster_view
            with TabPane("2 Pipeline", id="pipeline"):
                yield self.pipeline_view
            with TabPane("3 Query", id="query"):
                yield self.query_view
            with TabPane("4 Tail", id="tail"):
                yield self.tail_view
        yield Footer()

    def on_mount(self) -> None:
        self.cluster_view.members.focus()
        self.set_interval(1.0, self._tick)
        self.poll()

    # -- polling ---------------------------------------------------------------------------

    @work(exclusive=True, group="poll")
    async def poll(self) -> None:
        while True:
            await self.fetch_once()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.refresh_interval)
            except TimeoutError:
                pass

    async def fetch_once(self) -> None:
        client = self.client
        try:
            doc = await client.cluster_state()
            state = parse_state(doc)
        except ClientError as e:
            if client is not self.client:
                return  # attached elsewhere meanwhile
            self.failures += 1
            kind = "error" if isinstance(e, ApiError) else "unreachable"
            self.post_message(NodeUnreachable(client.node, str(e), self.failures, self.last_contact, kind))
            return
        if client is not self.client:
            return
        state = with_pipelines(state, await self.fetch_peer_pipelines(state))
        if client is self.client:
            self.post_message(StateUpdated(client.node, state, self.clock()))

    async def fetch_peer_pipelines(self, state: ClusterState) -> dict[str, Pipeline]:
        """Other members' own figures, each from its ``GET /cluster/state``: the
        attached node's document only carries its own pipeline. A member that does
        not answer in time keeps its last figures for ``PEER_STALE``, then has no
        card; one that answers as someone else has none at once."""
        want = peers_to_fetch(state)
        for addr in set(self.peers) - {m.api_addr for m in state.members}:
            await self._close(self.peers.pop(addr))
        for mid in set(self.peer_figures) - {m.id for m in want}:
            del self.peer_figures[mid]  # dead, left, gone, or now this node
        if not want:
            return {}
        answers = await asyncio.gather(*(self._peer_pipeline(m) for m in want))
        got = {m.id: p for m, p in zip(want, answers, strict=True) if p is not None}
        now = self.clock()
        for mid, p in got.items():
            self.peer_figures[mid] = (p, now)
        stale = max(PEER_STALE, 3 * self.refresh_interval)
        kept, expired = recent_figures(self.peer_figures, [m.id for m in want if m.id not in got], now, stale)
        for mid in expired:
            del self.peer_figures[mid]
        return got | kept

    async def _peer_pipeline(self, m: Member) -> Pipeline | None:
        """``m``'s own pipeline, from its ``/cluster/state``; None when it does not
        answer in time, or answers as another member."""
        c = self.peers.get(m.api_addr)
        if c is None:
            c = self.peers[m.api_addr] = self.client_factory(m.api_addr)
        try:
            doc = await asyncio.wait_for(c.cluster_state(), PEER_TIMEOUT)
        except (ClientError, TimeoutError):
            return None
        if doc.get("self") not in (m.id, None):
            self.peer_figures.pop(m.id, None)  # its address is someone else's now
            return None
        return doc.get("pipeline")

    @staticmethod
    async def _close(c: Client) -> None:
        try:
            await c.aclose()
        except Exception:  # noqa: BLE001 - closing a client must not stop the TUI
            pass

    def on_state_updated(self, msg: StateUpdated) -> None:
        if msg.node != self.client.node:
            return
        self.failures = 0
        self.polls += 1
        self.last_contact = msg.received
        self.state = st = msg.state
        for node, p in st.pipelines.items():
            self.histories.setdefault(node, History()).add(p, msg.received)
        members = {m.id for m in st.members}
        for node in list(self.histories):
            if node not in st.pipelines and node not in members:
                del self.histories[node]  # a peer that missed one poll keeps its history
        self.banner.clear_problem()
        self.cluster_view.show(st, self.histories)
        alerts = self.pipeline_view.show(st, self.histories)
        bar = self.statusbar
        bar.state, bar.received, bar.alerts, bar.reachable = st, msg.received, alerts, True
        bar.show(self.clock())

    def on_node_unreachable(self, msg: NodeUnreachable) -> None:
        if msg.node != self.client.node:
            return
        self.banner.show_problem(msg, self.refresh_interval, self.clock())
        bar = self.statusbar
        bar.reachable = False
        bar.show(self.clock())
        if (self.auto_switch and msg.kind == "unreachable" and msg.failures >= SWITCH_AFTER
                and not self.switching and switch_candidates(self.state)):
            self.switching = True
            self.switch_to_live(msg.node, switch_candidates(self.state))

    @work(exclusive=True, group="switch")
    async def switch_to_live(self, dead: str, candidates: list[str]) -> None:
        """Attach to the first of ``candidates`` that answers as a member; the
        attached node keeps being polled meanwhile, and if none answers the TUI
        stays where it is (the banner says so) and tries again later."""
        try:
            for addr in candidates:
                c = self.client_factory(addr)
                try:
                    doc = await asyncio.wait_for(c.cluster_state(), PEER_TIMEOUT)
                    ok = isinstance(doc.get("self"), str)
                except (ClientError, TimeoutError):
                    ok = False
                if c is not self.client and c not in self.peers.values():
                    await self._close(c)
                if self.client.node != dead:
                    return  # attached elsewhere meanwhile, or the node is back
                if ok:
                    await self.attach_to(addr, notice=f"{dead} stopped answering: attached to {addr}")
                    return
        finally:
            self.switching = False

    def _tick(self) -> None:
        self.statusbar.show(self.clock())

    # -- attaching ---------------------------------------------------------------------------

    @on(AttachNode)
    async def attach(self, msg: AttachNode) -> None:
        await self.attach_to(msg.addr)

    async def attach_to(self, addr: str, notice: str | None = None) -> None:
        old = self.client
        self.node = addr
        self.client = self.client_factory(addr)
        self.state, self.histories, self.failures, self.last_contact = None, {}, 0, None
        self.peer_figures = {}
        bar = self.statusbar
        bar.node, bar.state, bar.received, bar.alerts, bar.reachable = addr, None, None, 0, None
        bar.show(self.clock())
        self.banner.clear_problem()
        self.pipeline_view.reset()
        tail = self.tail_view
        if tail.started:
            tail.start()
        self.poll()
        if notice:
            self.notify(notice, title="switched node", severity="warning", timeout=15, markup=False)
        else:
            self.notify(f"attached to {addr}", markup=False)
        await self._close(old)

    # -- actions -------------------------------------------------------------------------------

    def action_view(self, name: str) -> None:
        self.tabs.active = name
        self._focus_view(name)

    def _focus_view(self, name: str) -> None:
        if name == "cluster":
            self.cluster_view.members.focus()
        elif name == "query":
            self.query_view.query_one("#q").focus()
        elif name == "tail":
            self.tail_view.log_widget.focus()
        else:
            self.set_focus(None)

    @on(TabbedContent.TabActivated)
    def tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "tail":
            if not self.tail_view.started:
                self.tail_view.start()

    def action_refresh(self) -> None:
        self._wake.set()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.node, duration(self.refresh_interval)))

    def on_query_finished(self, msg: QueryFinished) -> None:
        if msg.outcome == "error":
            self.notify(f"query failed: {msg.detail}", severity="error", timeout=8, markup=False)

    async def on_unmount(self) -> None:
        for c in [self.client, *self.peers.values()]:
            await self._close(c)
        self.peers.clear()


def recent_figures(figures: dict[str, tuple[Pipeline, float]], missed: list[str], now: float,
                   stale: float) -> tuple[dict[str, Pipeline], list[str]]:
    """For the members that ``missed`` this poll: (the last figures of those heard
    from within ``stale`` seconds, the ids whose figures are older): a slow answer
    (a loaded box) does not make a card flicker, a gone member's card goes."""
    kept: dict[str, Pipeline] = {}
    expired = []
    for mid in missed:
        if mid in figures:
            p, t = figures[mid]
            if now - t <= stale:
                kept[mid] = p
            else:
                expired.append(mid)
    return kept, expired


def switch_candidates(state: ClusterState | None) -> list[str]:
    """API addresses of the members to try when the attached node stops answering:
    those alive in its last state (then suspect ones), never itself."""
    if state is None:
        return []
    rank = {"alive": 0, "suspect": 1}
    live = [m for m in state.members if not m.is_self and m.api_addr and m.state in rank]
    return [m.api_addr for m in sorted(live, key=lambda m: (rank[m.state], m.id))]


def make_app(
    node: str = DEFAULT_NODE,
    refresh: float = DEFAULT_REFRESH,
    *,
    client: Callable[[str], Client] | None = None,
    clock: Callable[[], float] = time.time,
    max_lines: int = DEFAULT_MAX_LINES,
) -> OklogApp:
    """The app for ``oklog tui``; tests inject ``client`` (node → Client) and ``clock``."""
    factory = client or (lambda n: NodeClient(n, state_timeout=max(2.0, refresh)))
    return OklogApp(node, refresh, factory, clock=clock, max_lines=max_lines)
