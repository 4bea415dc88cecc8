"""``score.json`` of a scored dir, WER and CER numbers, and RESULTS.md.

``score.json`` is the machine-readable twin of ``result.txt``: names, input
paths, the Sum counts, whether sclite confirmed them, and every utterance
(normalised reference and hypothesis, word and character alignment ops), so
that significance tests and RESULTS.md need nothing else.  It is written last,
so a dir with a ``score.json`` is a finished one.

CER follows ESPnet's recipes (``asr.sh`` scores ``score_cer`` by running sclite
on ``tokenize_text.py --token_type char`` output): the *normalised* words are
split into characters and every word boundary becomes one ``<space>`` token,
which counts like a character (ref ``AB CD`` = 5 tokens ``A B <space> C D``;
hyp ``AB CE`` has 1 substitution: CER 20 %).  The tokens are aligned with the
same sclite costs as words (:func:`~espnet_delta.data.word_align.alignment_ops`);
the ``Wrd`` column of a CER table counts these reference tokens.

RESULTS.md starts with an environment block like ESPnet's (date, versions,
git commit, machine, the producing command; :func:`collect_environment`).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from espnet_delta.data.word_align import Counts
from espnet_delta.fileio import write_text_atomic

from .inputs import ScoringInputError
from .inputs import ScoredUtterance
from .report import round_half_up
from .significance import compare_utterances, paired_bootstrap

__all__ = [
    "CHAR_SPACE",
    "SCORE_JSON",
    "ScoreSummary",
    "char_tokens",
    "char_utterances",
    "collect_environment",
    "format_environment",
    "format_results_md",
    "git_commit",
    "load_score",
    "wer_numbers",
    "write_results_md",
    "write_score_json",
]

logger = logging.getLogger(__name__)

SCORE_JSON = "score.json"
#: ESPnet's word-boundary token of character token lists and CER scoring.
CHAR_SPACE = "<space>"
_FORMAT = 1
COLUMNS = ("Snt", "Wrd", "Corr", "Sub", "Del", "Ins", "Err", "S.Err")


def wer_numbers(counts: Counts) -> dict[str, float | int]:
    """The ESPnet RESULTS.md columns: Snt and Wrd as counts, the rest in percent
    (rounded to 0.1 as sclite prints them; Err is the WER)."""
    pct = [counts.correct, counts.substitutions, counts.deletions, counts.insertions, counts.errors]
    values = [counts.sentences, counts.words] + [round_half_up(counts.percent(v)) for v in pct]
    values.append(round_half_up(counts.ser))
    return dict(zip(COLUMNS, values))


def char_tokens(words: Sequence[str]) -> list[str]:
    """ESPnet's character tokens of normalised words: ``["AB", "CD"]`` -> ``A B <space> C D``."""
    tokens: list[str] = []
    for k, word in enumerate(words):
        if k:
            tokens.append(CHAR_SPACE)
        tokens.extend(word)
    return tokens


def char_utterances(utterances: Sequence[ScoredUtterance]) -> list[ScoredUtterance]:
    """The utterances re-aligned on character tokens (sclite costs), for CER."""
    return [ScoredUtterance.align(u.utt_id, u.spk_id, char_tokens(u.ref), char_tokens(u.hyp)) for u in utterances]


@dataclass
class ScoreSummary:
    """What ``score.json`` holds (``utterances`` may be empty when not needed).

    ``char_utterances`` (character-level alignments, for CER) is computed from
    ``utterances`` on first use unless ``score.json`` stored it.
    """

    system: str
    test_set: str
    counts: Counts
    sctk_checked: bool
    utterances: list[ScoredUtterance] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # input paths, tool versions, ...
    score_dir: Path | None = None
    char_utterances: list[ScoredUtterance] | None = None

    @property
    def wer(self) -> float:
        return self.counts.wer

    def char_level(self) -> list[ScoredUtterance]:
        if self.char_utterances is None:
            self.char_utterances = char_utterances(self.utterances)
        return self.char_utterances

    @property
    def char_counts(self) -> Counts:
        """Sum counts over character tokens (``<space>`` included; module docstring)."""
        return sum((u.counts for u in self.char_level()), Counts())

    @property
    def cer(self) -> float:
        return self.char_counts.wer


_KEYS = ("format", "system", "test_set", "wer", "counts", "cer", "char_counts", "sctk_checked", "utterances")


def write_score_json(path: str | os.PathLike[str], summary: ScoreSummary) -> Path:
    """Write ``score.json``; the character alignment (CER) is computed here, once per scored dir."""
    chars = summary.char_level()
    data = {
        "format": _FORMAT,
        "system": summary.system,
        "test_set": summary.test_set,
        "wer": summary.counts.wer,
        "counts": summary.counts.as_dict(),
        "cer": summary.cer,
        "char_counts": summary.char_counts.as_dict(),
        "sctk_checked": summary.sctk_checked,
        **summary.info,
        "utterances": [
            {"utt": u.utt_id, "spk": u.spk_id, "ref": " ".join(u.ref), "hyp": " ".join(u.hyp), "ops": u.ops,
             "char_ops": c.ops}
            for u, c in zip(summary.utterances, chars)
        ],
    }
    return write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def load_score(score_dir: str | os.PathLike[str]) -> ScoreSummary:
    """Read ``<score_dir>/score.json`` (or a path to the json itself)."""
    path = Path(score_dir)
    if path.is_dir():
        path = path / SCORE_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != _FORMAT:
            raise ScoringInputError(f"{path}: unknown score.json format {data.get('format')!r}")
        utts, chars = [], []
        for u in data["utterances"]:
            utt = ScoredUtterance(u["utt"], u["spk"], tuple(u["ref"].split()), tuple(u["hyp"].split()), u["ops"])
            utt.steps()  # checks that the ops fit the words
            utts.append(utt)
            if "char_ops" in u:  # absent in score.json files written before CER: realigned on use
                c = ScoredUtterance(utt.utt_id, utt.spk_id, tuple(char_tokens(utt.ref)), tuple(char_tokens(utt.hyp)),
                                    u["char_ops"])
                c.steps()
                chars.append(c)
        info = {k: v for k, v in data.items() if k not in _KEYS}
        return ScoreSummary(data["system"], data["test_set"], Counts(**data["counts"]), bool(data["sctk_checked"]),
                            utts, info, path.parent, chars if len(chars) == len(utts) else None)
    except FileNotFoundError as e:
        raise ScoringInputError(f"{path}: not found (is this a scored dir? run espnet_delta.bin.score first)") from e
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ScoringInputError):
            raise
        raise ScoringInputError(f"{path}: malformed score.json ({e!r})") from e


# ------------------------------------------------------------------ environment


def _dist_version(*names: str) -> str:
    """``"<distribution> <version>"`` of the first installed distribution, else ``"not installed"``."""
    for name in names:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=False)


def git_commit(path: str | os.PathLike[str] | None = None) -> str:
    """Short commit hash of the git work tree holding ``path`` (default: this package).

    ``-dirty`` is appended when tracked files differ from the commit (untracked
    files do not count, as with ``git describe --dirty``) or the state cannot be
    read; ``unknown`` outside a
    work tree, when ``path`` is git-ignored there (e.g. a package installed into
    a virtual env inside another checkout), or without git.
    """
    repo = Path(path) if path is not None else Path(__file__).resolve().parents[1]
    try:
        head = _git(repo, "rev-parse", "--short", "HEAD")
        if head.returncode != 0 or _git(repo, "check-ignore", "-q", ".").returncode == 0:
            return "unknown"
        dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.returncode != 0 or dirty.stdout.strip() else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("model name", "Model", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _gpu_name() -> str:
    """``"<name>"`` (``" x N"`` for N > 1 visible devices) or ``"none"``."""
    try:
        import torch

        if not torch.cuda.is_available():
            return "none"
        names = [torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())]
    except Exception as e:  # a broken driver must not stop RESULTS.md
        logger.warning("could not query the GPU: %s", e)
        return "unknown"
    if not names:
        return "none"
    if len(set(names)) == 1:
        return names[0] + (f" x {len(names)}" if len(names) > 1 else "")
    return ", ".join(names)


def collect_environment(command: str | None = None, repo: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """What produced a RESULTS.md: date, versions, git commit, machine and ``command``."""
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python version": " ".join(sys.version.split()),
        "espnet version": _dist_version("espnet"),
        "pytorch version": _dist_version("torch"),
        "s3prl version": _dist_version("espnet-s3prl", "s3prl"),
        "Git hash": git_commit(repo),
        "platform": platform.platform(),
        "CPU": f"{_cpu_model()} ({os.cpu_count() or 'unknown'} logical cores)",
        "GPU": _gpu_name(),
        "command": command or "unknown",
    }


def format_environment(env: Mapping[str, str]) -> list[str]:
    """ESPnet's ``## Environments`` block: one ``- key: `value` `` line per entry."""
    lines = ["## Environments"]
    for key, value in env.items():
        value = str(value).replace("\n", " ")
        lines.append(f"- {key}: `` {value} ``" if "`" in value else f"- {key}: `{value}`")
    return lines + [""]


# ------------------------------------------------------------------ RESULTS.md


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.1f}"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _level(summary: ScoreSummary, unit: str) -> tuple[Counts, list[ScoredUtterance]]:
    """Counts and utterances of one summary on words (``WER``) or characters (``CER``)."""
    if unit == "WER":
        return summary.counts, summary.utterances
    return summary.char_counts, summary.char_level()


def format_results_md(
    summaries: Sequence[ScoreSummary],
    baseline: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    title: str = "RESULTS",
    environment: Mapping[str, str] | None = None,
) -> str:
    """Markdown: the environment block (when given), system x test set WER and CER
    tables, then per test set ESPnet-style WER and CER tables.

    With ``baseline`` (a system name), each per-set table gets a column with the
    paired-bootstrap p-value of every other system against the baseline on
    that test set (:func:`~espnet_delta.scoring.significance.paired_bootstrap`,
    over word resp. character errors).
    """
    systems: list[str] = []
    sets: list[str] = []
    cell: dict[tuple[str, str], ScoreSummary] = {}
    for s in summaries:
        key = (s.system, s.test_set)
        if key in cell:
            raise ScoringInputError(f"system {s.system!r} is scored twice on {s.test_set!r}: "
                                    f"{cell[key].score_dir} and {s.score_dir}")
        cell[key] = s
        systems += [s.system] if s.system not in systems else []
        sets += [s.test_set] if s.test_set not in sets else []
    if baseline is not None and baseline not in systems:
        raise ScoringInputError(f"baseline system {baseline!r} is not among the scored systems {systems}")

    out = [f"# {title}", ""]
    if environment:
        out += format_environment(environment)
    out += ["Word (WER) and character (CER) error rates in percent, sclite-compatible alignment; references and "
            "hypotheses normalised by `espnet_delta.data.text_norm.normalize_transcript`; CER on characters with "
            "`<space>` between words, as ESPnet scores it (see `espnet_delta/scoring/results.py`).", ""]
    for unit in ("WER", "CER"):
        out += [f"## {unit} (%)", "", "|system|" + "|".join(sets) + "|", "|---|" + "---|" * len(sets)]
        for sys_name in systems:
            row = [_fmt(wer_numbers(_level(cell[(sys_name, t)], unit)[0])["Err"]) if (sys_name, t) in cell else "-"
                   for t in sets]
            out.append(f"|{sys_name}|" + "|".join(row) + "|")
        out.append("")
    for test_set in sets:
        base = cell.get((baseline, test_set)) if baseline else None
        head = "|system|" + "|".join(COLUMNS) + "|" + (f"p vs {baseline}|" if base else "")
        out += [f"## {test_set}", ""]
        for unit in ("WER", "CER"):
            out += [f"### {unit}", "", head, "|---" * (head.count("|") - 1) + "|"]
            for sys_name in systems:
                s = cell.get((sys_name, test_set))
                if s is None:
                    continue
                counts, utts = _level(s, unit)
                row = f"|{sys_name}|" + "|".join(_fmt(v) for v in wer_numbers(counts).values()) + "|"
                if base:
                    if s is base:
                        row += "-|"
                    else:
                        ea, eb, words = compare_utterances(_level(base, unit)[1], utts)
                        row += _p(paired_bootstrap(ea, eb, words, n_resamples=n_resamples, seed=seed).p_value) + "|"
                out.append(row)
            out.append("")
    if baseline:
        out += [f"p: two-sided paired bootstrap over utterances ({n_resamples} resamples, seed {seed}) of "
                f"WER(system) - WER({baseline}) (CER tables: of the CERs) on the same test set; "
                "see `espnet_delta/scoring/significance.py`.", ""]
    return "\n".join(out)


def write_results_md(
    path: str | os.PathLike[str],
    score_dirs: Sequence[str | os.PathLike[str]],
    baseline: str | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    title: str = "RESULTS",
    command: str | None = None,
    environment: Mapping[str, str] | None = None,
    append: Sequence[str | os.PathLike[str]] = (),
    sections: Sequence[str] = (),
) -> Path:
    """Write RESULTS.md (atomically) from scored dirs (each with a ``score.json``).

    The environment block is ``environment`` or, by default,
    :func:`collect_environment` with ``command`` (the command line that produced it).
    ``append``: Markdown files added at the end (e.g. the analysis stage's figure links);
    ``sections``: Markdown text put before them (e.g. :func:`~.seeds.format_seeds_md`; empty ones skipped).
    """
    if not score_dirs:
        raise ScoringInputError("no scored dirs given for RESULTS.md")
    summaries = [load_score(d) for d in score_dirs]
    env = environment if environment is not None else collect_environment(command)
    text = format_results_md(summaries, baseline, n_resamples, seed, title, env)
    for section in sections:
        if section.strip():
            text = text.rstrip("\n") + "\n\n" + section.strip("\n") + "\n"
    for extra in append:
        extra = Path(extra)
        if not extra.is_file():
            raise ScoringInputError(f"Markdown file to append to RESULTS.md not found: {extra}")
        text = text.rstrip("\n") + "\n\n" + extra.read_text(encoding="utf-8").strip("\n") + "\n"
    return write_text_atomic(path, text)
