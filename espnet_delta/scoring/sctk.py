"""Running NIST SCTK (``sclite``, ``sc_stats``) next to the Python scorer.

The tools are looked up as ``sclite`` / ``sc_stats`` on ``PATH``, then in
Debian's ``/usr/lib/sctk/bin`` (package ``sctk``, off ``PATH``), then through
Debian's ``sctk <tool>`` front command.  sclite runs exactly as ESPnet's
``asr.sh`` runs it (``-r ref.trn trn -h hyp.trn trn -i rm -o all stdout``)
and its ``Sum`` row is checked against the Python counts:
:class:`SctkMismatchError` when they differ.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from espnet_delta.data.word_align import Counts

__all__ = [
    "MapssweResult",
    "SctkError",
    "SctkMismatchError",
    "check_counts",
    "find_sctk_tool",
    "parse_sclite_sum",
    "run_mapsswe",
    "run_sclite",
]

SCTK_BIN = Path("/usr/lib/sctk/bin")


class SctkError(RuntimeError):
    """An SCTK tool is missing, failed, or wrote a report we cannot read."""


class SctkMismatchError(SctkError):
    """sclite's counts differ from the Python scorer's; both are in the message."""

    def __init__(self, ours: Counts, sclite: Counts, report: str | os.PathLike[str] | None = None):
        self.ours, self.sclite = ours, sclite
        names = ("sentences", "words", "correct", "substitutions", "deletions", "insertions", "sentence_errors")
        diff = ", ".join(f"{n}: ours {getattr(ours, n)} vs sclite {getattr(sclite, n)}" for n in names
                         if getattr(ours, n) != getattr(sclite, n))
        where = f" (sclite report: {report})" if report else ""
        super().__init__(
            f"sclite and the Python scorer disagree{where}: {diff}\n  ours:   {ours.as_dict()}\n  sclite: {sclite.as_dict()}"
        )


def find_sctk_tool(name: str) -> list[str] | None:
    """The command (argv prefix) that runs SCTK tool ``name``, or ``None``."""
    found = shutil.which(name)
    if found:
        return [found]
    if os.access(SCTK_BIN / name, os.X_OK):
        return [str(SCTK_BIN / name)]
    front = shutil.which("sctk")
    if front:
        return [front, name]
    return None


def _require(name: str, command: list[str] | None) -> list[str]:
    command = command or find_sctk_tool(name)
    if not command:
        raise SctkError(f"{name} not found (install Debian's sctk, or put NIST SCTK's bin/ on PATH)")
    return command


def _run(command: list[str], stdin: bytes | None = None, cwd: str | os.PathLike[str] | None = None) -> str:
    try:
        proc = subprocess.run(command, input=stdin, capture_output=True, cwd=cwd, check=False)
    except OSError as e:
        raise SctkError(f"cannot run {' '.join(command)}: {e}") from e
    out = proc.stdout.decode("utf-8", errors="replace")
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", errors="replace").strip()
        how = f"crashed (signal {-proc.returncode})" if proc.returncode < 0 else f"exited with {proc.returncode}"
        raise SctkError(f"{' '.join(command)} {how}: {err or out[-2000:]}")
    return out


def run_sclite(ref_trn: str | os.PathLike[str], hyp_trn: str | os.PathLike[str], sclite: list[str] | None = None) -> str:
    """sclite's ``-o all`` report (summaries + alignments) for a ref/hyp trn pair."""
    command = _require("sclite", sclite)
    return _run([*command, "-r", str(ref_trn), "trn", "-h", str(hyp_trn), "trn", "-i", "rm", "-o", "all", "stdout"])


_SUM_ROW = re.compile(r"^\s*\|\s*Sum\s*\|([\d\s]+)\|([\d\s]+)\|\s*$")


def parse_sclite_sum(report: str) -> Counts:
    """The counts of the ``Sum`` row of sclite's counts table (``-o rsum``/``all``)."""
    for line in report.splitlines():
        match = _SUM_ROW.match(line)
        if match:
            left, right = match.group(1).split(), match.group(2).split()
            if len(left) == 2 and len(right) == 6:
                snt, wrd = map(int, left)
                corr, sub, dele, ins, err, serr = map(int, right)
                counts = Counts(snt, wrd, corr, sub, dele, ins, serr)
                if counts.errors != err:
                    raise SctkError(f"sclite's Sum row is inconsistent (Err {err} != S+D+I): {line.strip()}")
                return counts
    raise SctkError("no 'Sum' row of counts in the sclite report (was it run with -o rsum or -o all?)")


def check_counts(ours: Counts, sclite: Counts, report: str | os.PathLike[str] | None = None) -> None:
    """Raise :class:`SctkMismatchError` unless the two sets of counts are equal."""
    if ours != sclite:
        raise SctkMismatchError(ours, sclite, report)


@dataclass(frozen=True)
class MapssweResult:
    """sc_stats' matched-pairs sentence-segment word error test (MAPSSWE).

    ``z`` is sc_stats' Z statistic of the segment-wise error differences with
    the sign flipped to B minus A (positive: B makes more errors), as in
    :func:`~espnet_delta.scoring.significance.matched_pairs_test`;
    ``p_value`` is the two-sided normal p-value of ``z``.
    """

    segments: int
    z: float
    p_value: float
    significant: bool  # sc_stats' own decision at p = 0.05
    report: str


_MTCH = re.compile(r"MTCH_PR_RESULTS .*\(# segs: (\d+)\).*\(Z Stat: (-?[\d.]+|-?nan|-?inf)\).*\(Stat Diff: (\w+)\)")


def run_mapsswe(
    ref_trn: str | os.PathLike[str],
    hyp_trn_a: str | os.PathLike[str],
    hyp_trn_b: str | os.PathLike[str],
    sclite: list[str] | None = None,
    sc_stats: list[str] | None = None,
) -> MapssweResult:
    """Run sclite (``-o sgml``) on both systems and ``sc_stats -t mapsswe`` on the pair."""
    sclite, sc_stats = _require("sclite", sclite), _require("sc_stats", sc_stats)
    with tempfile.TemporaryDirectory(prefix="mapsswe.") as tmp:
        sgml = b""
        for name, hyp in (("sysA", hyp_trn_a), ("sysB", hyp_trn_b)):
            _run([*sclite, "-r", str(Path(ref_trn).resolve()), "trn", "-h", str(Path(hyp).resolve()), "trn", name,
                  "-i", "rm", "-o", "sgml", "-O", tmp, "-n", name])
            sgml += (Path(tmp) / f"{name}.sgml").read_bytes()
        _run([*sc_stats, "-p", "-t", "mapsswe", "-v", "-n", "result", "-O", tmp], stdin=sgml)
        report = (Path(tmp) / "result.stats.mapsswe").read_text(encoding="utf-8", errors="replace")
    match = _MTCH.search(report)
    if not match:
        raise SctkError("no MTCH_PR_RESULTS line in sc_stats' MAPSSWE report")
    z = -float(match.group(2))  # sc_stats reports A - B
    z = z + 0.0  # no negative zero
    p_value = math.erfc(abs(z) / math.sqrt(2.0)) if math.isfinite(z) else (1.0 if math.isnan(z) else 0.0)
    return MapssweResult(int(match.group(1)), z, p_value, match.group(3).lower() == "yes", report)
