"""Incremental detokenization and stop strings, token by token on a byte-level BPE."""

from __future__ import annotations

import pytest

from fastserve.runtime.frontend.detokenizer import REPLACEMENT_CHAR, IncrementalDetokenizer
from fastserve.runtime.frontend.stop_strings import StopStringMatcher
from fastserve.runtime.frontend.tokenizer import ModelTokenizer


def stream(tok: ModelTokenizer, text: str, prompt: str = "Hello") -> list[str]:
    """Feed `text`'s tokens one at a time; return each step's emitted piece, then the flush."""
    detok = IncrementalDetokenizer(tok.decode, tok.encode(prompt))
    pieces = [detok.push([t]) for t in tok.encode(text)]
    return [*pieces, detok.flush()]


@pytest.mark.parametrize("text", ["héllo wörld", "emoji 🙂 and 日本語", "🙂🙂", "plain ascii text"])
def test_multibyte_characters_split_over_tokens_never_leak_replacement(tok, text):
    ids = tok.encode(text)
    pieces = stream(tok, text)
    assert "".join(pieces) == text
    assert all(REPLACEMENT_CHAR not in p for p in pieces)
    if text.isascii():
        assert len(ids) < len(text)  # merges exist, so this case is not vacuous
    else:
        # Some character really is split: more tokens than characters would emit pieces.
        assert any(p == "" for p in pieces[:-1])


def test_emoji_waits_for_its_fourth_byte(tok):
    ids = tok.encode("🙂")
    assert len(ids) == 4  # the tiny vocabulary has no merges for it
    detok = IncrementalDetokenizer(tok.decode, tok.encode("Hi"))
    assert [detok.push([t]) for t in ids] == ["", "", "", "🙂"]


def test_flush_releases_an_incomplete_character(tok):
    ids = tok.encode("a🙂")
    detok = IncrementalDetokenizer(tok.decode, [])
    assert detok.push(ids[:1]) == "a"
    assert detok.push(ids[1:-1]) == ""
    assert detok.flush() == REPLACEMENT_CHAR  # truncated output: the client sees the damage


def test_special_tokens_are_skipped(tok):
    eos = tok.eos_token_ids[0]
    detok = IncrementalDetokenizer(tok.decode, tok.encode("x"))
    assert detok.push(tok.encode("hi")) == "hi"
    assert detok.push([eos]) == ""
    assert detok.flush() == ""


def test_many_tokens_at_once(tok):
    detok = IncrementalDetokenizer(tok.decode, tok.encode("Hello"))
    assert detok.push(tok.encode(" wörld 🙂")) == " wörld 🙂"


def feed_all(matcher: StopStringMatcher, pieces: list[str]) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out.append(text)
        if hit:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


def test_stop_string_spanning_tokens_is_cut_and_never_streamed(tok):
    text = "Hello world STOP and more"
    ids = tok.encode(text)
    assert "STOP" not in [tok.token_text(t) for t in ids]  # it really spans tokens
    detok, matcher = IncrementalDetokenizer(tok.decode, []), StopStringMatcher(["STOP"])
    emitted = []
    for t in ids:
        piece, hit = matcher.feed(detok.push([t]))
        emitted.append(piece)
        if hit:
            break
    assert hit
    assert "".join(emitted) == "Hello world "
    assert all("S" not in p for p in emitted)  # the partial "ST" was held back


def test_held_text_released_when_the_stop_string_does_not_complete():
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("abc ST") == ("abc ", False)
    assert matcher.feed("ART") == ("START", False)
    assert matcher.feed("x S") == ("x ", False)
    assert matcher.flush() == "S"


def test_earliest_of_several_stop_strings_wins():
    assert feed_all(StopStringMatcher(["world", "lo w"]), ["hel", "lo", " world"]) == ("hel", True)
    matcher = StopStringMatcher(["\n\n", "END"])
    assert feed_all(matcher, ["a\n", "\nEND"]) == ("a", True)
    assert matcher.matched == "\n\n"


def test_stop_string_inside_one_piece_and_empty_stops_ignored():
    assert feed_all(StopStringMatcher(["", "b"]), ["aaa b ccc"]) == ("aaa ", True)
    assert feed_all(StopStringMatcher([""]), ["abc"]) == ("abc", False)


def test_multibyte_stop_string(tok):
    detok, matcher = IncrementalDetokenizer(tok.decode, []), StopStringMatcher(["ö"])
    out = []
    for t in tok.encode("wörld"):
        piece, hit = matcher.feed(detok.push([t]))
        out.append(piece)
        if hit:
            break
    assert hit and "".join(out) == "w"
