"""The committed generated code in connector/pb must match what proto/ produces."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent
GENPROTO_PATH = REPO_ROOT / "scripts" / "genproto.py"


def _load_genproto() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_genproto_under_test", GENPROTO_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh() -> None:
    genproto = _load_genproto()
    stale = genproto.stale_files(REPO_ROOT / "connector" / "pb")
    assert not stale, (
        "connector/pb is out of date with proto/; run `make proto` and commit the result. "
        "Stale or missing files: " + ", ".join(stale)
    )


def test_generation_is_deterministic(tmp_path: Path) -> None:
    genproto = _load_genproto()
    first, second = tmp_path / "a", tmp_path / "b"
    genproto.generate(first)
    genproto.generate(second)
    assert genproto.diff_trees(first, second) == []


def test_every_proto_has_generated_modules() -> None:
    genproto = _load_genproto()
    pb_root = REPO_ROOT / "connector" / "pb"
    for rel in genproto.proto_files():
        stem = rel.with_suffix("").as_posix()
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
            assert (pb_root / f"{stem}{suffix}").is_file(), f"missing {stem}{suffix}"


def test_imports_are_rewritten_to_package() -> None:
    """Generated modules must not import the bare top-level ``c1`` package."""
    offenders = []
    for path in sorted((REPO_ROOT / "connector" / "pb").rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if stripped.startswith(("from c1", "import c1")):
                offenders.append(f"{path.relative_to(REPO_ROOT)}: {stripped}")
    assert not offenders, "\n".join(offenders)
