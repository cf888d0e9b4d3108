"""docs/configuration.md lists exactly the settings the code reads, and the flags `chorus` takes.

The server's names are read from the source: every `Settings` field (read as `CHORUS_<FIELD>`
by `Settings.from_env`) and every string literal that names a variable in `service/` or
`actors/` (`"CHORUS_…"`, `"MAX_RECORDINGS_PER_…"`, `"REDIS_URL"`, `"DATABASE_URL"`). The section
"Read by the tests and the bench" is checked the same way against what `tests/` and `bench/`
read with `os.environ.get`. A setting added to the code without a row, or a row left behind by a
setting that went, fails here.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import attrs

from service.cli import build_parser
from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
TEST_SECTION = "Read by the tests and the bench"

NAME = r"(?:CHORUS_[A-Z0-9_]+|MAX_RECORDINGS_PER_[A-Z]+|REDIS_URL|DATABASE_URL)"
LITERAL = re.compile(rf"""["']({NAME})["']""")
ENVIRON_GET = re.compile(rf"""environ\.get\(\s*["']({NAME})["']""")
CELL_NAME = re.compile(rf"`({NAME})`")
CODE = re.compile(r"`([^`]*)`")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def sections() -> dict[str, str]:
    """The doc's text under each `## ` heading (the intro under "")."""
    parts = re.split(r"^## (.+)$", DOC.read_text(), flags=re.MULTILINE)
    return {"": parts[0], **dict(zip(parts[1::2], parts[2::2], strict=True))}


def table_names(text: str) -> set[str]:
    """The variables named in the first column of the text's tables."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| variable"):
            names.update(CELL_NAME.findall(line.split(" | ")[0]))
    return names


def source_names(folders: tuple[str, ...], pattern: re.Pattern[str]) -> set[str]:
    return {
        name
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name in pattern.findall(path.read_text())
    }


def server_names() -> set[str]:
    fields = {f"CHORUS_{field.name.upper()}" for field in attrs.fields(Settings)}
    return fields | source_names(("service", "actors"), LITERAL)


def test_server_settings_match_the_code() -> None:
    documented = set().union(
        *(table_names(text) for title, text in sections().items() if title != TEST_SECTION)
    )
    read = server_names()
    assert read - documented == set(), "read by the code, missing from docs/configuration.md"
    assert documented - read == set(), "in docs/configuration.md, not read by the code"


def test_test_and_bench_variables_match_the_code() -> None:
    documented = table_names(sections()[TEST_SECTION])
    read = source_names(("tests", "bench"), ENVIRON_GET) - server_names()
    assert read - documented == set(), "read by tests or bench, missing from the doc"
    assert documented - read == set(), "in the doc's test section, not read by tests or bench"


def test_flags_match_the_parser() -> None:
    parser = build_parser()
    commands = next(
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    )
    flags = {
        option
        for command in commands.choices.values()
        for action in command._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    documented = {flag for code in CODE.findall(DOC.read_text()) for flag in FLAG.findall(code)}
    assert flags - documented == set(), "chorus flags missing from docs/configuration.md"
    assert documented - flags == set(), "flags in docs/configuration.md that chorus lacks"
