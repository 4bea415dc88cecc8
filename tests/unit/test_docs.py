"""The README and docs/*.md name only things that exist.

Docs rot silently: a renamed option or a moved module leaves a page that still reads well.
This test reads every page the way a user would follow it:

* a file path in a code span, a code block or a link must exist, relative to the repo root
  (``espnet_delta/...``, ``local/...``, ``egs2/...``, ...) or to a recipe directory
  (``conf/...``, ``run.sh``, ...); links relative to the page. ``<name>`` placeholders and
  ``{a,b}`` alternatives must match at least one file. Run outputs (``exp/``, ``data/``,
  ``dump/``, ``downloads/``) are not checked. A page may exempt paths of other projects
  (ESPnet's recipes) by naming them in a comment ``<!-- docs-test external: PATH ... -->``;
* a module (``espnet_delta.x.y``, ``python -m x.y``) must be found by
  ``importlib.util.find_spec`` (a trailing function or class name must be defined in it);
* an option after ``./run.sh`` or ``local/asr.sh`` must be a variable of local/asr.sh's
  option block (``./transfer.sh``, ``./paper_tables.sh``: theirs); after
  ``python -m espnet_delta.<module>`` it must be accepted by that module's ``get_parser()``;
  after ``bench/<script>.py`` it must be one of that script's options; a code span that is
  just options (```--nj 4```) must name an option of an engine script or of a command the
  same page runs.

The README must start with the two set-up commands and stay short, list exactly the
registered classes, and link every page of docs/; its layout tree must exist and name every
subpackage of espnet_delta. Failures name the page, the line and the missing thing.
"""

from __future__ import annotations

import ast
import functools
import glob
import importlib.util
import os
import re
from pathlib import Path
from typing import Callable, Dict, FrozenSet, List, Optional, Set, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS_DIR = REPO / "docs"
PAGES = [README] + sorted(DOCS_DIR.glob("*.md"))
RECIPE_DIRS = sorted(p.parent for p in REPO.glob("egs2/*/asr1/run.sh"))

README_MAX_LINES = 320
QUICK_START_LINES = 40
QUICK_START_COMMANDS = ("cd egs2/mini_myst/asr1 && ./run.sh", "make test")

#: first path components resolved against the repo root, resp. against a recipe directory
ROOT_FIRST = ("espnet_delta", "local", "egs2", "bench", "tests", "tools", "docs")
ROOT_FILES = ("Makefile", "setup.py", "requirements.txt", "pytest.ini", "README.md")
RECIPE_FIRST = ("conf", "local")
RECIPE_FILES = ("run.sh", "db.sh", "cmd.sh", "path.sh", "transfer.sh", "paper_tables.sh", "RESULTS.md")

PATH_RE = re.compile(
    r"(?<![\w./<>-])(?:\.\./)*(?P<path>(?:" + "|".join(ROOT_FIRST + RECIPE_FIRST) + r")/[^\s`'\"()\[\]|]*"
    r"|(?:" + "|".join(re.escape(f) for f in ROOT_FILES + RECIPE_FILES) + r")(?![\w.-]))"
)
MODULE_RE = re.compile(r"(?<![\w./-])(?P<mod>(?:espnet_delta|espnet2)(?:\.\w+)+)")
DASH_M_RE = re.compile(r"(?:^|\s)-m\s+(?P<mod>[A-Za-z_]\w*(?:\.\w+)*)")
OPTION_RE = re.compile(r"(?<![\w-])--(?P<name>[A-Za-z][\w-]*)")
SPAN_RE = re.compile(r"`([^`]+)`")
LINK_RE = re.compile(r"\]\((?P<target>[^)\s]+)\)")
EXTERNAL_RE = re.compile(r"<!--\s*docs-test external:(?P<paths>[^>]*)-->")
BENCH_RE = re.compile(r"(?<![\w/])bench/\w+\.py")
COMMENT_RE = re.compile(r"(?:^|\s)#.*$")
QUOTED_RE = re.compile(r"\"[^\"]*\"|'[^']*'")

ENGINE_SCRIPTS = {  # command word -> the script whose option block it takes
    "./run.sh": "local/asr.sh",
    "local/asr.sh": "local/asr.sh",
    "./transfer.sh": "local/transfer.sh",
    "local/transfer.sh": "local/transfer.sh",
    "./paper_tables.sh": "local/paper_tables.sh",
    "local/paper_tables.sh": "local/paper_tables.sh",
}
ENGINE_RE = re.compile(r"(?<![\w-])(?:\.\./)*(?P<cmd>\./run\.sh|\./transfer\.sh|\./paper_tables\.sh|local/asr\.sh|local/transfer\.sh|local/paper_tables\.sh)(?![\w.])")


# ---------------------------------------------------------------------------- reading pages


class Line:
    """One line (or one code-block command joined over ``\\`` continuations) of a page."""

    def __init__(self, number: int, text: str, code: bool):
        self.number, self.text, self.code = number, text, code

    def spans(self) -> List[str]:
        """The code the line holds: the whole line in a code block, else its `spans`."""
        return [self.text] if self.code else SPAN_RE.findall(self.text)


def read_lines(text: str) -> List[Line]:
    lines: List[Line] = []
    in_code = False
    pending: Optional[Line] = None
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if pending is not None:
            more = raw.strip()
            pending.text += " " + more.rstrip("\\")
            if not more.endswith("\\"):
                lines.append(pending)
                pending = None
            continue
        line = Line(number, raw, in_code)
        if in_code and raw.rstrip().endswith("\\"):
            line.text = raw.rstrip()[:-1]
            pending = line
            continue
        lines.append(line)
    if pending is not None:
        lines.append(pending)
    return lines


def external_paths(text: str) -> Tuple[str, ...]:
    return tuple(p.rstrip("/") for m in EXTERNAL_RE.finditer(text) for p in m.group("paths").split())


# ---------------------------------------------------------------------------- paths


def expand_braces(pattern: str) -> List[str]:
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    out = []
    for alt in m.group(1).split(","):
        out.extend(expand_braces(pattern[: m.start()] + alt + pattern[m.end():]))
    return out


def to_globs(path: str) -> List[str]:
    """``a/<name>/{b,c}.py`` -> ``a/*/b.py``, ``a/*/c.py`` (brackets taken literally)."""
    path = path.replace("[", "[[]")
    path = re.sub(r"<[^<>/]*>", "*", path)
    return expand_braces(path)


def path_bases(path: str) -> List[Path]:
    first = path.split("/", 1)[0]
    bases = []
    if first in ROOT_FIRST or path in ROOT_FILES:
        bases.append(REPO)
    if first in RECIPE_FIRST or path in RECIPE_FILES:
        bases.extend(RECIPE_DIRS)
    return bases


def path_exists(path: str) -> bool:
    for base in path_bases(path):
        for pattern in to_globs(path):
            if glob.glob(os.path.join(str(base), pattern)):
                return True
    return False


def clean_path(path: str) -> str:
    path = path.rstrip(".,:;")
    path = re.sub(r"(?<=\.\w)(?:,\w+)+$", "", path)  # data.scp,speech,sound -> data.scp
    return path


def missing_paths(lines: List[Line], external: Tuple[str, ...]) -> List[Tuple[int, str]]:
    missing = []
    for line in lines:
        for span in line.spans():
            for m in PATH_RE.finditer(span):
                path = clean_path(m.group("path"))
                if any(path == e or path.startswith(e + "/") for e in external):
                    continue
                if not path_exists(path):
                    missing.append((line.number, path))
    return missing


def broken_links(page: Path, lines: List[Line]) -> List[Tuple[int, str]]:
    broken = []
    for line in lines:
        if line.code:
            continue
        for m in LINK_RE.finditer(line.text):
            target = m.group("target").split("#", 1)[0]
            if not target or re.match(r"[a-z]+:", target):  # in-page anchors, URLs
                continue
            if not (page.parent / target).exists():
                broken.append((line.number, target))
    return broken


# ---------------------------------------------------------------------------- modules


@functools.lru_cache(maxsize=None)
def find_module(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, AttributeError, ValueError):
        return None


def top_level_names(origin: str) -> Set[str]:
    tree = ast.parse(Path(origin).read_text(encoding="utf-8"))
    names: Set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


@functools.lru_cache(maxsize=None)
def dotted_name_exists(name: str) -> bool:
    """A module, or a module followed by one name defined at its top level. Walks the name
    from the left, so only packages are imported (``find_spec`` of ``a.b.c`` imports ``a.b``),
    never the module whose attribute is named."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        spec = find_module(".".join(parts[:i]))
        if spec is None:
            return False
        if i == len(parts):
            return True
        if spec.submodule_search_locations is None:  # a plain module: the rest is one name in it
            rest = parts[i:]
            return len(rest) == 1 and bool(spec.origin) and spec.origin.endswith(".py") and rest[0] in top_level_names(spec.origin)
    return True


def dash_m_modules(command: str) -> List[re.Match]:
    """The ``-m module`` parts of a Python command line (``python -m espnet_delta.launch -m
    espnet2.bin.asr_train``: both); none in text that runs no python."""
    return list(DASH_M_RE.finditer(command)) if "python" in command else []


def missing_modules(lines: List[Line]) -> List[Tuple[int, str]]:
    missing = []
    for line in lines:
        names = [m.group("mod") for m in MODULE_RE.finditer(line.text)]
        for span in line.spans():
            names += [m.group("mod") for m in dash_m_modules(span)]
        for name in dict.fromkeys(names):
            if not dotted_name_exists(name):
                missing.append((line.number, name))
    return missing


# ---------------------------------------------------------------------------- options


@functools.lru_cache(maxsize=None)
def script_options(script: str) -> FrozenSet[str]:
    """Variables assigned in a shell script's option block: the lines before its
    ``help_message()`` definition or its ``parse_options`` call (parse_options accepts
    exactly the variables declared by then)."""
    names = set()
    for raw in (REPO / script).read_text(encoding="utf-8").splitlines():
        if re.match(r"\s*(help_message\s*\(\)|parse_options\b)", raw):
            break
        m = re.match(r"([A-Za-z_]\w*)=", raw)
        if m:
            names.add(m.group(1))
    return frozenset(names | {"help"})


def string_options(path: Path) -> FrozenSet[str]:
    """Every ``"--name"`` string constant of a Python file (however its parser is built)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(
        node.value[2:]
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"--[A-Za-z][\w-]*", node.value)
    )


@functools.lru_cache(maxsize=None)
def module_options(name: str) -> Optional[FrozenSet[str]]:
    """Options of ``python -m name``: its ``get_parser()``'s, or its ``"--x"`` strings when it
    has none; None for modules that are not ours (their options are not checked)."""
    if not name.startswith("espnet_delta."):
        return None
    spec = find_module(name)
    if spec is None or not spec.origin:
        return frozenset()
    if "get_parser" in top_level_names(spec.origin):
        module = importlib.import_module(name)
        parser = module.get_parser()
        return frozenset(s[2:] for action in parser._actions for s in action.option_strings if s.startswith("--")) | {"help"}
    return string_options(Path(spec.origin)) | {"help"}


class Accepted:
    """The options one command accepts, read lazily and in order: a ``get_parser()`` is only
    imported when a page names an option after that command (importing ESPnet's ASR task costs
    many seconds)."""

    def __init__(self, owner: str, *sources: Callable[[], FrozenSet[str]]):
        self.owner, self.sources = owner, sources

    def __contains__(self, name: str) -> bool:
        return name == "help" or any(name in source() or name.replace("-", "_") in source() for source in self.sources)


def page_options(lines: List[Line]) -> Accepted:
    """What a bare ```--name``` span of a page may name: an option of an engine script or of a
    command (``python -m espnet_delta...``, ``bench/*.py``) that the same page runs."""
    sources: List[Callable[[], FrozenSet[str]]] = [functools.partial(script_options, s) for s in sorted(set(ENGINE_SCRIPTS.values()))]
    for line in lines:
        for span in line.spans():
            for m in dash_m_modules(span):
                sources.append(functools.partial(module_options_or_none, m.group("mod")))
            for m in BENCH_RE.finditer(span):
                sources.append(functools.partial(string_options, REPO / m.group(0)))
    return Accepted("the engine scripts or a command this page runs", *sources)


def module_options_or_none(name: str) -> FrozenSet[str]:
    return module_options(name) or frozenset()


def segment_options(segment: str, bare: Optional[Accepted] = None) -> Tuple[Optional[Accepted], List[str]]:
    """(the options the command accepts, the options named after it) for one command;
    (None, []) when the segment is no command we check. A segment that is just options is
    checked against ``bare``."""
    command = COMMENT_RE.sub("", segment)
    command = QUOTED_RE.sub("''", command)
    engine = ENGINE_RE.search(command)
    if engine:
        script = ENGINE_SCRIPTS[engine.group("cmd")]
        return Accepted(script, functools.partial(script_options, script)), options_after(command, engine.end())
    modules = dash_m_modules(command)
    if modules:
        module = modules[-1].group("mod")
        if not module.startswith("espnet_delta."):
            return None, []  # ESPnet's and other projects' options are not checked
        return Accepted(f"python -m {module}", functools.partial(module_options_or_none, module)), options_after(command, modules[-1].end())
    bench = BENCH_RE.search(command)
    if bench:
        return Accepted(bench.group(0), functools.partial(string_options, REPO / bench.group(0))), options_after(command, bench.end())
    if command.lstrip().startswith("--") and bare is not None:
        return bare, options_after(command, 0)
    return None, []


def options_after(command: str, start: int) -> List[str]:
    return [m.group("name") for m in OPTION_RE.finditer(command, start)]


def unknown_options(lines: List[Line]) -> List[Tuple[int, str]]:
    unknown = []
    bare = page_options(lines)
    for line in lines:
        for span in line.spans():
            for segment in re.split(r"&&|;|\|\|?", span):
                accepted, named = segment_options(segment, bare)
                for name in named:
                    if accepted is not None and name not in accepted:
                        unknown.append((line.number, f"--{name} (not an option of {accepted.owner})"))
    return unknown


# ---------------------------------------------------------------------------- the checks


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def report(page: Path, what: str, problems: List[Tuple[int, str]]) -> str:
    return f"{page_id(page)} names {len(problems)} {what}:\n" + "\n".join(
        f"  {page_id(page)}:{number}: {thing}" for number, thing in problems
    )


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_paths_exist(page: Path):
    text = page.read_text(encoding="utf-8")
    lines = read_lines(text)
    problems = missing_paths(lines, external_paths(text)) + broken_links(page, lines)
    assert not problems, report(page, "missing file(s)", problems)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_modules_exist(page: Path):
    problems = missing_modules(read_lines(page.read_text(encoding="utf-8")))
    assert not problems, report(page, "missing module(s)", problems)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_options_exist(page: Path):
    problems = unknown_options(read_lines(page.read_text(encoding="utf-8")))
    assert not problems, report(page, "unknown option(s)", problems)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_phone_checkpoint_only(page: Path):
    """The recipes select ``valid.wer_ctc.best.pth``; ``valid.loss.best.pth`` is only right
    for the phone models (their ``cer_ctc`` joins multi-character phones)."""
    problems = [
        (line.number, "valid.loss.best.pth outside a phone-model context")
        for line in read_lines(page.read_text(encoding="utf-8"))
        if "valid.loss.best.pth" in line.text and not re.search(r"(?i:phone|phn)|PER", line.text)
    ]
    assert not problems, report(page, "stale checkpoint name(s)", problems)


def test_readme_starts_with_the_two_commands():
    head = README.read_text(encoding="utf-8").splitlines()[:QUICK_START_LINES]
    for command in QUICK_START_COMMANDS:
        assert any(command in line for line in head), f"README.md: {command!r} is not within its first {QUICK_START_LINES} lines"


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines, at most {README_MAX_LINES}: move material to docs/"


def test_every_doc_is_linked_from_the_readme():
    linked = set()
    for line in read_lines(README.read_text(encoding="utf-8")):
        for m in LINK_RE.finditer(line.text):
            linked.add((REPO / m.group("target").split("#", 1)[0]).resolve())
    unlinked = [page_id(p) for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"README.md does not link {', '.join(unlinked)}"


def registered_names() -> Dict[str, Set[str]]:
    """Registry keys by kind, read from register.py's dict literals."""
    tree = ast.parse((REPO / "espnet_delta/asr/register.py").read_text(encoding="utf-8"))
    kinds = {"FRONTENDS": "frontend", "ENCODERS": "encoder", "DECODERS": "decoder", "models": "model"}
    names: Dict[str, Set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in kinds:
                    names.setdefault(kinds[target.id], set()).update(
                        k.value for k in node.value.keys if isinstance(k, ast.Constant)
                    )
    return names


def test_readme_lists_every_registered_class():
    registered = registered_names()
    assert set(registered) == {"frontend", "encoder", "decoder", "model"}, registered
    listed: Dict[str, Set[str]] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*(frontend|encoder|decoder|model)\s*\|(.*)\|\s*$", line)
        if m:
            listed.setdefault(m.group(1), set()).update(SPAN_RE.findall(m.group(2)))
    for kind, names in registered.items():
        assert listed.get(kind) == names, (
            f"README.md's registered-classes table lists {kind}s {sorted(listed.get(kind, []))}, "
            f"espnet_delta/asr/register.py registers {sorted(names)}"
        )


def layout_entries() -> List[Tuple[int, str]]:
    """(line, path) of every entry of the README's layout tree: the first code block after
    ``## Layout``; each line is ``<indent><name>[, <name>]  <description>`` and a name is
    relative to the nearest less indented ``dir/`` above it."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "## Layout")
    open_ = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    entries: List[Tuple[int, str]] = []
    parents: List[Tuple[int, str]] = []  # (indent, path) of the enclosing dirs
    for i in range(open_ + 1, len(lines)):
        line = lines[i]
        if line.startswith("```"):
            break
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        while parents and parents[-1][0] >= indent:
            parents.pop()
        prefix = parents[-1][1] if parents else ""
        for name in names.split(", "):
            path = prefix + name
            entries.append((i + 1, path))
            if name.endswith("/"):
                parents.append((indent, path))
    return entries


def test_readme_layout_exists():
    problems = [(n, path) for n, path in layout_entries() if not path_exists_from_root(path)]
    assert not problems, report(README, "layout entr(ies) that do not exist", problems)


def path_exists_from_root(path: str) -> bool:
    return any(glob.glob(os.path.join(str(REPO), pattern)) for pattern in to_globs(path))


def test_readme_layout_names_every_subpackage():
    named = {path.rstrip("/") for _, path in layout_entries()}
    packages = sorted(
        str(p.parent.relative_to(REPO)) for p in REPO.glob("espnet_delta/**/__init__.py") if "__pycache__" not in p.parts
    )
    absent = [p for p in packages if p not in named]
    assert not absent, f"README.md's layout tree does not name the package(s) {', '.join(absent)}"


def test_results_page_quotes_the_results_files():
    """Every decimal number of docs/results.md appears in a committed egs2/*/asr1/RESULTS.md."""
    results = "\n".join(p.read_text(encoding="utf-8") for p in sorted(REPO.glob("egs2/*/asr1/RESULTS.md")))
    problems = [
        (line.number, number)
        for line in read_lines((DOCS_DIR / "results.md").read_text(encoding="utf-8"))
        for number in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", line.text)
        if not re.search(r"(?<![\d.])" + re.escape(number) + r"(?!\d)", results)
    ]
    assert not problems, report(DOCS_DIR / "results.md", "number(s) found in no RESULTS.md", problems)


def test_scoring_docstring_matches_the_normaliser():
    """scoring/__init__.py once said numbers are not verbalised while text_norm spells them out."""
    text = (REPO / "espnet_delta/scoring/__init__.py").read_text(encoding="utf-8")
    assert "not verbalised" not in text, "espnet_delta/scoring/__init__.py: numbers are spelled out (text_norm.spell_numbers)"


# ---------------------------------------------------------------------------- the checker itself


def test_checker_flags_what_is_missing():
    """Hand-written lines with one existing and one missing thing each."""
    lines = read_lines(
        "`espnet_delta/asr/register.py` and `espnet_delta/asr/no_such_module.py`\n"
        "`conf/finetune.yaml` and `conf/no_such_config.yaml`, outputs `exp/ft_x/model.pth`\n"
        "```sh\n"
        "./run.sh --pretrained_upstream_dir d \\\n"
        "    --pretrain_dir d   # --not_checked_in_a_comment\n"
        "python -m espnet_delta.bin.no_such_command\n"
        "python -m espnet_delta.bin.merge --method sa --no_such_merge_option 1\n"
        "```\n"
        "see espnet_delta.asr.register.register and espnet_delta.asr.register.no_such_name\n"
        "`--nj 2`, `--method sa` and `--no_such_engine_option 1`\n"
    )
    assert missing_paths(lines, ()) == [(1, "espnet_delta/asr/no_such_module.py"), (2, "conf/no_such_config.yaml")]
    assert unknown_options(lines) == [
        (4, "--pretrain_dir (not an option of local/asr.sh)"),
        (7, "--no_such_merge_option (not an option of python -m espnet_delta.bin.merge)"),
        (10, "--no_such_engine_option (not an option of the engine scripts or a command this page runs)"),
    ]
    assert missing_modules(lines) == [(6, "espnet_delta.bin.no_such_command"), (9, "espnet_delta.asr.register.no_such_name")]


def test_checker_expands_placeholders():
    assert to_globs("egs2/<corpus>/asr1/{run,db}.sh") == ["egs2/*/asr1/run.sh", "egs2/*/asr1/db.sh"]
    assert path_exists("egs2/<corpus>/asr1/run.sh")
    assert not path_exists("egs2/<corpus>/asr1/no_such_file.sh")
    assert clean_path("local/asr.sh.") == "local/asr.sh"


def test_checker_reads_the_engine_option_block():
    options = script_options("local/asr.sh")
    assert {"stage", "stop_stage", "nj", "pretrained_upstream_dir", "decode_batch_size"} <= options
    assert "pretrain_dir" not in options
