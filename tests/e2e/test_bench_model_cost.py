"""`python -m bench.model_cost` on the real tiny.en model and the repository's speech: every
window, batch, beam and forced count asked for is timed once, and the report reads them. Only
the shape and the decoded tokens are asserted: the times belong to the machine (speed lives in
the bench, not in tests)."""

from __future__ import annotations

from pathlib import Path

import msgspec
from support.audio_files import SPEECH

from bench.model_cost import ModelCost, main, markdown, measure, parse_arguments

SET = SPEECH / "en_wer.tsv"
QUICK = ("--forced", "4", "--repeats", "1")


def test_each_piece_asked_for_is_timed_and_reported(tmp_path: Path) -> None:
    settings = parse_arguments(["--set", str(SET), "--windows", "4,10", "--batches", "1,2", *QUICK])
    cost = measure(settings)
    assert [(e.window_s, e.batch) for e in cost.encoder] == [(4, 1), (4, 2), (10, 1), (10, 2)]
    assert all(e.ms > 0 for e in cost.encoder)
    assert [(d.batch, d.beam_size) for d in cost.decoding] == [(1, 1), (1, 5), (2, 1), (2, 5)]
    one, two = (d.tokens for d in cost.decoding if d.beam_size == 1)
    assert one >= 5 and two > one  # speech was decoded, a sequence for each clip of the batch
    assert [(f.where, f.tokens) for f in cost.forced] == [
        ("nothing", 0),
        ("prefix", 4),
        ("context", 4),
    ]
    assert [d.batch for d in cost.drafts] == [1, 2]
    assert all(1 <= d.windows <= d.batch for d in cost.drafts)
    assert all(min(d.alone_ms, d.apart_ms, d.shared_ms) > 0 for d in cost.drafts)
    table = markdown(cost)
    assert "| 10 s | 2 |" in table and "| forced prefix | 4 |" in table
    assert "| beam 5 | 2 |" in table and f"| 2 | {cost.drafts[1].windows} |" in table


def test_the_report_is_written(tmp_path: Path) -> None:
    main(["--set", str(SET), "--windows", "4", "--batches", "1", *QUICK, "--out", str(tmp_path)])
    (written,) = tmp_path.glob("model-cost-*.json")
    cost = msgspec.json.decode(written.read_bytes(), type=ModelCost)
    assert cost.model == "tiny.en" and cost.cpu_threads == 1
    assert (tmp_path / written.name.replace(".json", ".md")).read_text().count("|") > 20
