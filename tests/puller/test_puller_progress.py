"""The single-machine progress display: a redrawn bar on a terminal, plain lines in a log."""

from __future__ import annotations

import io
from pathlib import Path

from support.puller_gguf import write_gguf

from localmodel_server.puller import PullError, Reason, TerminalProgress
from localmodel_server.puller.gguf_info import read_gguf_info
from localmodel_server.puller.result import PullResult


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_line_redrawn_in_place(tmp_path: Path) -> None:
    stream = FakeTerminal()
    bar = TerminalProgress(stream, interval=0)
    bar.progress(0, 4 << 20)
    bar.progress(1 << 20, 4 << 20)
    path = write_gguf(tmp_path / "m.gguf")
    size = path.stat().st_size
    bar.succeeded(PullResult(str(path), size, "ab" * 32, read_gguf_info(path), size, "downloaded"))
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 3  # two redraws, then the final line replaces the bar
    assert "[#######.......................]  25%  1.0 MiB / 4.0 MiB" in text
    assert text.endswith(f"m.gguf: llama Q8_0, downloaded {size / 1024:.1f} KiB; size and sha256 verified\n")


def test_a_log_gets_plain_lines_and_the_failure_reason() -> None:
    stream = io.StringIO()
    bar = TerminalProgress(stream, interval=0)
    bar.progress(5, None)
    bar.failed(PullError(Reason.SOURCE_NOT_FOUND, "HTTP 404"))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and lines[0].startswith("5 B  ")
    assert lines[-1] == "pull failed: SourceNotFound: HTTP 404"
