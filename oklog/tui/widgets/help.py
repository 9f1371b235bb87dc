"""The help screen: every key binding, and what the views show."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# oklog tui

Attached to **{node}**, refreshing every **{refresh}**. If the attached node stops
answering, the TUI attaches to a member that was alive and says so.

| key | where | does |
| --- | --- | --- |
| `1` `2` `3` `4` | anywhere (not in a text field) | Cluster, Pipeline, Query, Tail view |
| `tab` / `shift+tab` | anywhere | move focus |
| `r` | anywhere | refresh now |
| `?` `f1` | anywhere | this help |
| `q` `ctrl+q` | anywhere | quit |
| `enter` / click, `a` | Cluster: member list | attach the TUI to that member |
| `/` | Query, Tail | edit the query / filter |
| `enter` | Query form | run the query (a new query cancels the running one) |
| `esc` | Query | cancel the running query |
| `ctrl+t` | Query, Tail | toggle regex |
| `[` `]` | Query | earlier / later page of the result |
| `{{` `}}` | Query | first / last page (the last page follows a running query) |
| `ctrl+s` | Query | save all results of the last query to a file |
| `←` `→` `shift+←` `shift+→` / click, drag | Query: histogram | pick a bucket / extend the selection |
| `enter` / `backspace` | Query: histogram | narrow from/to to the selection / back to the range before |
| `space` | Tail | pause / resume (records keep arriving into a buffer) |
| `f` | Tail | follow on/off |
| `c` | Tail | clear |

**Cluster**: every member with role, address, gossip state (alive / suspect / dead / left),
and the topology of ingest members feeding store members. The title counts members alive
of all members (those that left gracefully are not counted).

- **inc**: the member's incarnation. A member raises it to refute a suspicion about
  itself (or when it restarts), so a climbing number means it was suspected and answered.
- **last heard**: time since the attached node last heard from that member.
- **uptime**: since the member started; for a dead member it stops at the last time it
  was heard from (dim).

**Pipeline**: per node, ingest segments by state with bytes and consumer lag (age of the
oldest flushed segment), ingest rates (sparklines over the last five minutes), store,
replication, compaction and retention figures. Warnings are highlighted on top.

**Query**: `from`/`to` take durations ago (`5m`, `2h`), RFC 3339 times or ULIDs; `q` is a
substring or (regex on) an RE2 expression matched against the producer's line. Results
stream in as they arrive and are kept whole (in a temporary file); the screen shows one
page at a time. Save writes every record, as on screen or (raw) as the node sent them.
After the search text the query bar takes `oklog query`'s flags: `-i` (any case), `-v TERM`
(not), `-where 'status>=500'` (a JSON or logfmt field), `-q TERM` (another term), `-regex`.
Above the results, the matches per time bucket over from/to (the node's exact counts);
**PARTIAL** above the bars when some store members did not answer.

**Tail**: live records as they arrive anywhere in the cluster, filtered like a query. A new
filter starts afresh; records the node dropped because the view fell behind are counted in
the status line.

Control characters in records are shown, never obeyed: `^[` is ESC, `^M` a carriage
return, `<U+202E>` a bidi override (dim).

Mouse: click tabs, rows, buttons and checkboxes; scroll with the wheel.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark,f1", "dismiss_help", "Close help"),
    ]

    def __init__(self, node: str, refresh: str) -> None:
        super().__init__()
        self.text = HELP.format(node=node, refresh=refresh)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Markdown(self.text)

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
