"""A modal asking where and how to save a query's result; dismisses with a
``SaveRequest`` or None. Its note says exactly what will be written: how many
records, in which format, and that an existing file is replaced."""

from __future__ import annotations

import os
from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label

from oklog.tui.model import count, human_bytes


@dataclass(frozen=True)
class SaveRequest:
    path: str
    raw: bool  # as the node sent them (ULID TOPIC LINE), else as on screen
    records: int  # exactly these: the first ``records`` of the result ...
    size: int  # ... which are its first ``size`` bytes


def save_note(records: int, size: int, raw: bool, which: str = "") -> str:
    what = f"{count(records)} record{'s' if records != 1 else ''}"
    what = f"The {what} {which}" if which else f"All {what} of this result"
    if raw:
        fmt = (f"as the node sent them ({human_bytes(size)}): ULID TOPIC LINE, bytes unchanged")
    else:
        fmt = ("as shown on screen: UTC TIME TOPIC LINE, control characters escaped "
               "(^[ for ESC, <U+202E> for bidi controls), UTF-8")
    return f"{what}, one per line, {fmt}. An existing file is replaced."


class SaveDialog(ModalScreen[SaveRequest | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: str, records: int, size: int, which: str = "") -> None:
        super().__init__()
        self.default = default
        self.records = records
        self.nbytes = size
        self.which = which

    def compose(self) -> ComposeResult:
        with Vertical(id="save-dialog"):
            yield Label("Save query results to", classes="title")
            yield Input(self.default, id="save-path")
            yield Checkbox("raw: as the node sent them (ULID TOPIC LINE)", False, id="save-raw",
                           compact=True)
            yield Label(self.note_text(False), classes="note", id="save-note")
            with Horizontal(classes="buttons"):
                yield Button("Save", variant="primary", id="save-ok")
                yield Button("Cancel", id="save-cancel")

    def note_text(self, raw: bool) -> str:
        return save_note(self.records, self.nbytes, raw, self.which)

    @property
    def note(self) -> str:
        return self.note_text(self.query_one("#save-raw", Checkbox).value)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        self.query_one("#save-note", Label).update(self.note_text(event.value))

    def _done(self) -> None:
        path = os.path.expanduser(self.query_one("#save-path", Input).value.strip())
        if not path:
            self.dismiss(None)
            return
        raw = self.query_one("#save-raw", Checkbox).value
        self.dismiss(SaveRequest(path, raw, self.records, self.nbytes))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._done()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "save-ok":
            self._done()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
