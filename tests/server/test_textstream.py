"""Stop strings and UTF-8 across token boundaries (no model needed)."""

from __future__ import annotations

from localmodel_server.engine.textstream import TextStream


def feed(stream: TextStream, pieces: list[bytes]) -> str:
    out = "".join(stream.push(p) for p in pieces if not stream.stopped)
    return out + stream.flush()


def test_stop_string_spanning_tokens_is_never_emitted():
    stream = TextStream(["STOP"])
    emitted = [stream.push(p) for p in (b"hello S", b"T", b"O", b"P more")]
    assert emitted == ["hello ", "", "", ""]
    assert stream.stopped and stream.text == "hello "
    assert stream.flush() == ""


def test_held_back_prefix_is_released_when_it_is_not_a_stop():
    stream = TextStream(["STOP"])
    assert stream.push(b"a ST") == "a "
    assert stream.push(b"ART") == "START"
    assert not stream.stopped


def test_earliest_of_several_stops_wins():
    assert feed(TextStream(["world", "lo w"]), [b"hello world"]) == "hel"


def test_multibyte_character_split_across_tokens():
    euro = "€".encode()
    stream = TextStream([])
    assert stream.push(euro[:1]) == ""
    assert stream.push(euro[1:]) == "€"


def test_invalid_utf8_at_the_end_is_replaced_not_raised():
    assert feed(TextStream([]), [b"ok", b"\xe2\x82"]) == "ok\ufffd"


def test_held_back_text_is_flushed_at_the_end():
    assert feed(TextStream(["STOP"]), [b"the end ST"]) == "the end ST"
