"""The README's code blocks and commands, as the tests that run or check them read them
(tests/unit/test_readme_*.py): what the README says is what gets exercised."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"

# Placeholders the README's commands use, and what the checks put in their place.
PLACEHOLDERS = {
    "URL": "http://127.0.0.1:8000",
    "PEER_URL": "http://127.0.0.1:8001",
    "PEER": "http://127.0.0.1:8001",
    "N": "1",
    "R": "2",
    "B": "1",
    "MS": "500",
    "LOG": "server.log",
    "DIR": "keys",
    "REQUEST_ID": "req-1",
}
_PLACEHOLDER = re.compile(r"\b(" + "|".join(sorted(PLACEHOLDERS, key=len, reverse=True)) + r")\b")
_REDIRECT = re.compile(r"^\d?>")


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def section(title: str) -> str:
    """From the heading `title` to the next heading of the same or a higher level."""
    text = readme_text()
    match = re.search(rf"^(#+) {re.escape(title)}\n", text, flags=re.MULTILINE)
    assert match is not None, f"README has no section {title!r}"
    level = len(match.group(1))
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.MULTILINE)
    return rest if end is None else rest[: end.start()]


def code_blocks(lang: str, text: str | None = None) -> list[str]:
    """The fenced blocks tagged `lang` ("" for untagged ones), in order."""
    text = readme_text() if text is None else text
    blocks: list[str] = []
    tag, body = None, []  # tag: the open block's language, None outside a block
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if tag is None:
                tag, body = line[3:].strip(), []
                continue
            if tag == lang:
                blocks.append("".join(body))
            tag = None
        elif tag is not None:
            body.append(line)
    return blocks


def inline_spans(text: str | None = None) -> list[str]:
    """Every `code span` outside fenced blocks, whitespace collapsed and table pipes
    unescaped (a span may wrap over a line break)."""
    text = readme_text() if text is None else text
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    spans = re.findall(r"`([^`]+)`", text)
    return [re.sub(r"/\s+", "/", " ".join(s.split())).replace("\\|", "|") for s in spans]


def shell_commands(prefix: str) -> list[str]:
    """Commands starting with `prefix`: lines of bash blocks and inline spans."""
    lines = [ln.strip() for block in code_blocks("bash") for ln in block.splitlines()]
    found = [ln for ln in lines + inline_spans() if ln == prefix or ln.startswith(prefix + " ")]
    return list(dict.fromkeys(found))


def argv_variants(command: str) -> list[list[str]]:
    """A README command as argv lists ready to check: comments and redirections dropped,
    `[optional]` brackets opened, `a|b|c` choices one variant each, `...` (the command
    above) as `--url URL`, and placeholders filled from PLACEHOLDERS."""
    tokens = []
    for token in shlex.split(command, comments=True):
        if _REDIRECT.match(token):
            break  # `2> server.log` and what follows is the shell's, not the command's
        tokens += ["--url", "URL"] if token == "..." else [token.strip("[]")]
    tokens = [_PLACEHOLDER.sub(lambda m: PLACEHOLDERS[m.group(1)], t) for t in tokens]
    choices = [i for i, t in enumerate(tokens) if "|" in t]
    if not choices:
        return [tokens]
    (at,) = choices  # one choice list per command in this README
    return [tokens[:at] + [alt] + tokens[at + 1 :] for alt in tokens[at].split("|")]


def flags(argv: list[str]) -> list[str]:
    """The `--long` options of an argv (without `=value`)."""
    return [t.split("=", 1)[0] for t in argv if t.startswith("--")]
