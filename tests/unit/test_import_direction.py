"""The package's rooms import downward only (docs: DESIGN.md, Layout).

Every module of espnet_delta is parsed (not imported: a broken module still gets its
imports checked, and nothing heavy loads) and each import of the package -- at module
level or inside a function, ``import x``, ``from x import y``, relative imports and
``importlib.import_module("...")`` with a literal name -- is checked against the tiers
below. A module may import its own room and any room of a lower tier; rooms of the
same tier are independent of each other. The commands (bin/) sit on top and nothing
outside them imports them.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set

import pytest

PACKAGE = "espnet_delta"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

#: Rooms from the bottom up, as the data flows: waveforms -> SSL layers -> cached
#: features -> ESPnet models -> merged models -> analysis; word-error scoring sits
#: below the models because decoding scores its output (asr/decoding.py); the job
#: planner and the back-ends above the library, the commands on top. A room is a
#: subpackage or a top-level module; ``__init__`` is the package's own __init__.py.
#: nn/ and decoding.py are rooms DESIGN.md allows for.
TIERS = (
    ("__init__", "fileio", "fusion", "cli", "nn"),  # plain helpers and PyTorch modules
    ("ssl", "data"),  # S3PRL upstreams and their layers; corpora, Kaldi dirs, text, word alignment
    ("features",),  # the SSL feature cache
    ("whisper", "scoring"),  # Whisper checkpoints and screening; sclite-compatible scores
    ("asr", "launch"),  # ESPnet integration and decoding; launch.py is its import hook (asr/__init__ installs it)
    ("merge", "decoding"),  # checkpoint merging; decoding, were it a top-level module
    ("analysis",),
    ("recipe", "jobs"),  # the job planner; local and Slurm back-ends
    ("bin",),  # commands
)
#: Rooms of the same tier that form one unit and may import each other.
PARTNERS = ({"asr", "launch"},)
#: The rooms whose code users and the recipes call as a library.
LIBRARY = {room for tier in TIERS[:7] for room in tier}

TIER_OF: Dict[str, int] = {room: i for i, tier in enumerate(TIERS) for room in tier}


@dataclasses.dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. espnet_delta.data.screen
    target: str  # the imported module, e.g. espnet_delta.data.word_align
    path: Path
    lineno: int

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT.parent)}:{self.lineno}: {self.module} imports {self.target}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def room(module: str) -> str:
    """``espnet_delta.asr.frontend.sshr`` -> ``asr``; ``espnet_delta.fileio`` -> ``fileio``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: Set[str]) -> Iterator[Import]:
    """Every import of a package module by ``module``, wherever it stands in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        targets: List[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path.name == "__init__.py", node)
            # ``from espnet_delta import launch`` imports the module espnet_delta.launch
            subs = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            targets = subs if subs and len(subs) == len(node.names) else [base] + subs
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                yield Import(module, target, path, node.lineno)


def all_imports() -> List[Import]:
    modules = package_modules()
    known = set(modules)
    return [imp for module, path in modules.items() for imp in imports_of(module, path, known)]


def order_problem(imp: Import) -> Optional[str]:
    """Why ``imp`` goes against the tiers, or ``None``."""
    src, dst = room(imp.module), room(imp.target)
    if src == dst or dst == "bin":  # imports of bin/: test_nothing_imports_the_commands
        return None
    for r in (src, dst):
        if r not in TIER_OF:
            return f"room {r!r} has no tier: place it in TIERS of {Path(__file__).name} (DESIGN.md, Layout)"
    if TIER_OF[dst] > TIER_OF[src]:
        return f"{src}/ (tier {TIER_OF[src]}) must not import {dst}/ (tier {TIER_OF[dst]}), a room above it"
    if TIER_OF[dst] == TIER_OF[src] and not any({src, dst} <= p for p in PARTNERS):
        return f"{src}/ and {dst}/ share tier {TIER_OF[src]} and must stay independent"
    return None


def test_every_module_is_found_and_parsed() -> None:
    modules = package_modules()
    assert f"{PACKAGE}.data.screen" in modules and f"{PACKAGE}.bin" in modules
    assert len(all_imports()) > 100


def test_resolves_relative_and_from_package_imports(tmp_path) -> None:
    pkg = tmp_path / PACKAGE / "data"
    pkg.mkdir(parents=True)
    src = pkg / "screen.py"
    src.write_text(
        "from .word_align import count_errors\n"
        "from .. import launch, fileio\n"
        "from espnet_delta import __version__\n"
        "def f():\n"
        "    import espnet_delta.bin.decode\n"
        "    importlib.import_module('espnet_delta.recipe.x')\n"
    )
    known = {f"{PACKAGE}.data.word_align", f"{PACKAGE}.launch", f"{PACKAGE}.fileio"}
    got = sorted(((i.target, i.lineno) for i in imports_of(f"{PACKAGE}.data.screen", src, known)), key=lambda t: t[1])
    assert got == [
        (f"{PACKAGE}.data.word_align", 1),
        (f"{PACKAGE}.launch", 2),
        (f"{PACKAGE}.fileio", 2),
        (PACKAGE, 3),
        (f"{PACKAGE}.bin.decode", 5),
        (f"{PACKAGE}.recipe.x", 6),
    ]


@pytest.mark.parametrize(
    "module, target, bad",
    [
        ("espnet_delta.data.screen", "espnet_delta.scoring.align", True),  # up
        ("espnet_delta.ssl.embeddings", "espnet_delta.features.layout", True),  # up
        ("espnet_delta.ssl.embeddings", "espnet_delta.data.audio", True),  # same tier, independent rooms
        ("espnet_delta.asr", "espnet_delta.launch", False),  # partners
        ("espnet_delta.features.layout", "espnet_delta.ssl.streams", False),  # down
        ("espnet_delta.scoring.inputs", "espnet_delta.data.word_align", False),  # down
        ("espnet_delta.scoring.report", "espnet_delta.asr.decoding", True),  # up
        ("espnet_delta.features.extract", "espnet_delta.bin.decode", False),  # left to the next test
        ("espnet_delta.newroom.x", "espnet_delta.fileio", True),  # a room without a tier
    ],
)
def test_the_rule_itself(module: str, target: str, bad: bool) -> None:
    assert (order_problem(Import(module, target, ROOT / "x.py", 1)) is not None) == bad


def test_rooms_import_downward_only() -> None:
    problems = [f"{imp}: {why}" for imp in all_imports() if (why := order_problem(imp))]
    assert not problems, "imports against the room order (DESIGN.md, Layout):\n" + "\n".join(problems)


def test_library_rooms_never_import_the_planner() -> None:
    top = {"recipe", "jobs"}  # bin/: test_nothing_imports_the_commands
    bad = [str(imp) for imp in all_imports() if room(imp.module) in LIBRARY and room(imp.target) in top]
    assert not bad, "library code imports the job planner or the back-ends:\n" + "\n".join(bad)


def test_nothing_imports_the_commands() -> None:
    bad = [str(imp) for imp in all_imports() if room(imp.module) != "bin" and room(imp.target) == "bin"]
    assert not bad, "only espnet_delta/bin may import espnet_delta.bin; move what these need into the library:\n" + "\n".join(bad)
