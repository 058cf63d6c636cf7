"""Every shell command of the README is one its tool accepts as written: `fastserve`
commands parse with the real command line, each `benchmarks/` script exists and takes the
flags shown (read from its `--help`: nothing is benchmarked), the make targets exist, the
documented serving flags and environment variables are real. The README's Python, curl and
websocket examples run in test_readme_examples.py, its cluster file in
test_readme_cluster.py."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fastserve.deploy.cli import build_parser
from tests.readme import (
    README,
    argv_variants,
    flags,
    inline_spans,
    readme_text,
    section,
    shell_commands,
)

ROOT = README.parent
# Mentions in running text, completed as the sentence around them says.
PROSE = {
    "fastserve trace": ["fastserve", "trace", "server.log"],  # "`fastserve trace` rebuilds..."
    "fastserve simulate --policies": ["fastserve", "simulate", "--policies", "fcfs,gittins"],
}


def subcommand(name: str) -> argparse.ArgumentParser:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def parse(argv: list[str]) -> argparse.Namespace:
    """`fastserve ARGV` through the real parser; argparse's complaint fails the test."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"fastserve {' '.join(argv)}: {err.getvalue()}") from exc


def fastserve_argvs() -> list[list[str]]:
    commands = shell_commands("fastserve")
    assert len(commands) >= 15, commands  # every section's commands were found
    argvs = []
    for command in commands:
        argvs += [PROSE[command]] if command in PROSE else argv_variants(command)
    return argvs


@pytest.mark.parametrize("argv", fastserve_argvs(), ids=" ".join)
def test_fastserve_command_parses(argv: list[str]) -> None:
    assert argv[0] == "fastserve"
    if "--help" in argv:
        with contextlib.redirect_stdout(io.StringIO()) as out, pytest.raises(SystemExit) as done:
            build_parser().parse_args(argv[1:])
        assert done.value.code == 0 and "--model" in out.getvalue()
        return
    args = parse(argv[1:])
    assert args.command == argv[1] and callable(args.func)


def test_every_preset_the_readme_names_is_one_bench_takes() -> None:
    (command,) = [c for c in shell_commands("fastserve bench") if "--preset" in c]
    presets = [a[a.index("--preset") + 1] for a in argv_variants(command)]
    assert len(presets) == 7
    assert [parse(["bench", "--url", "x", "--preset", p]).preset for p in presets] == presets


def test_documented_serving_flags_exist() -> None:
    serve_flags = set(subcommand("serve")._option_string_actions)
    keygen_flags = set(subcommand("keygen")._option_string_actions)
    for title in ("Defaults", "Serving options", "Security and limits"):
        spans = inline_spans(section(title))
        documented = {
            f
            for span in spans
            if not span.startswith(("python ", "fastserve ", "make "))
            for f in re.findall(r"--[a-z][a-z0-9-]*", span)
        }
        assert documented, title
        assert documented <= serve_flags | keygen_flags, (title, documented - serve_flags)


def test_make_targets_exist() -> None:
    commands = shell_commands("make")
    assert {"make serve", "make test"} <= {" ".join(argv_variants(c)[0][:2]) for c in commands}
    for command in commands:
        (argv,) = argv_variants(command)
        done = subprocess.run([*argv, "-n"], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stderr)
        for arg in argv[2:]:  # ARGS="..." goes to `fastserve serve`
            name, _, value = arg.partition("=")
            assert name == "ARGS", arg
            parse(["serve", *value.split()])


def test_gpu_script_exists_and_parses() -> None:
    (command,) = shell_commands("bash")
    (argv,) = argv_variants(command)
    assert (ROOT / argv[1]).is_file()
    subprocess.run(["bash", "-n", argv[1]], cwd=ROOT, check=True)


def test_documented_environment_variables_are_read() -> None:
    names = set(re.findall(r"\bFASTSERVE_[A-Z_]+\b", readme_text()))
    assert names
    code = "\n".join(
        p.read_text(encoding="utf-8")
        for p in ROOT.rglob("*.py")
        if ".venv" not in p.parts and "tests" not in p.parts
    )
    assert {n for n in names if f'"{n}"' not in code} == set()


_HELP_DRIVER = """
import contextlib, io, json, runpy, sys
out = {}
for script in sys.argv[1:]:
    sys.argv = [script, "--help"]
    text = io.StringIO()
    try:
        with contextlib.redirect_stdout(text):
            runpy.run_path(script, run_name="__main__")
        code = None  # ran to the end without exiting: not an argparse --help
    except SystemExit as exc:
        code = exc.code
    out[script] = {"code": code, "help": text.getvalue()}
print(json.dumps(out))
"""


def benchmark_commands() -> dict[str, list[list[str]]]:
    """benchmarks/NAME.py -> the argv variants the README shows for it."""
    found: dict[str, list[list[str]]] = {}
    for span in inline_spans():
        match = re.match(r"^(?:python )?(benchmarks/\w+\.py)\b", span)
        if match:
            argvs = argv_variants(span.removeprefix("python "))
            found.setdefault(match.group(1), []).extend(argvs)
    return found


def test_benchmark_scripts_exist_and_take_the_flags_shown() -> None:
    commands = benchmark_commands()
    assert len(commands) >= 12, sorted(commands)
    missing = [s for s in commands if not (ROOT / s).is_file()]
    assert missing == []
    # One interpreter for every --help (each parses its arguments first and exits).
    done = subprocess.run(
        [sys.executable, "-c", _HELP_DRIVER, *sorted(commands)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    helps = json.loads(done.stdout.strip().splitlines()[-1])
    for script, argvs in commands.items():
        assert helps[script]["code"] == 0, (script, helps[script])
        shown = {f for argv in argvs for f in flags(argv)}
        unknown = {f for f in shown if not re.search(rf"{re.escape(f)}\b", helps[script]["help"])}
        assert unknown == set(), (script, unknown)


def test_readme_points_at_files_that_exist() -> None:
    paths = {
        s
        for s in inline_spans()
        if re.fullmatch(r"(docs|runtime|deploy|protocol|actors|tests)/[\w/.]+\.(py|md|sh)", s)
    }
    paths |= set(re.findall(r"\]\(((?:docs|tests)/[\w/.]+)\)", readme_text()))
    assert paths
    assert sorted(p for p in paths if not (ROOT / Path(p)).exists()) == []
