"""The tests carry their data: the real speech is in the repository (tests/data/speech), every
clip with its source and a licence that allows redistribution, and no test reaches outside the
repository for data, so a fresh clone runs the whole suite with nothing skipped."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest
from support.audio_files import DATA, SPEECH

ROOT = Path(__file__).resolve().parents[2]
CLIPS = DATA / "speech"
PAPERS = {"MANIFEST.tsv", "en_wer.tsv", "README.md", "LICENSE"}  # everything else is a clip
REDISTRIBUTABLE = ("public domain", "CC BY 4.0", "CC0", "MIT")
# A path built out of the checkout, as the tests once read the shared set (`../shared/speech`).
OUTSIDE = re.compile(r"""/\s*["']shared["']|["']\.\./shared|parents\[1\]\.parent""")


def rows(table: Path) -> list[dict[str, str]]:
    with table.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def test_every_clip_is_in_the_manifest_with_its_source_and_a_free_licence() -> None:
    manifest = {row["file"]: row for row in rows(CLIPS / "MANIFEST.tsv")}
    on_disk = {
        path.relative_to(CLIPS).as_posix()
        for path in CLIPS.rglob("*")
        if path.is_file() and path.name not in PAPERS
    }
    assert on_disk == set(manifest)
    for name, row in manifest.items():
        assert row["source"], name
        assert any(licence in row["license"] for licence in REDISTRIBUTABLE), (name, row)
    assert {row["file"] for row in rows(CLIPS / "en_wer.tsv")} <= set(manifest)


@pytest.mark.skipif("CHORUS_SPEECH_DIR" in os.environ, reason="another speech set was chosen")
def test_the_tests_read_the_repositorys_speech() -> None:
    assert SPEECH == CLIPS


def test_no_test_reads_data_from_outside_the_repository() -> None:
    here = Path(__file__).resolve()
    reaching = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path != here
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert reaching == []
