"""The demos' narration: each line reaches the terminal in one write, so the server
process, writing to the same terminal, cannot cut into it."""

from __future__ import annotations

import io

from hellohi import narration


class _Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        if text:
            self.calls.append(text)
        return super().write(text)


def test_every_narrated_line_is_one_write(monkeypatch):
    out = _Writes()
    monkeypatch.setattr("sys.stdout", out)
    narration.step(1, "server: bind and listen")
    narration.say("alice", "-> HELLO alice")
    assert out.calls == ["\n=== 1. server: bind and listen\n", "[alice] -> HELLO alice\n"]
