"""The dev grids of stage 8: one point per merged model, selection on dev, the reports.

SA merging is searched over every schedule reading the stage is given (each formula
over the lambda x alpha grid, each schedule file as one point; by default the three
formula readings ``depth_power``, ``linear_exponent`` and ``adult_power``, see
:mod:`espnet_delta.merge.schedule`); each baseline gets
its own grid (lerp c, task-arithmetic scale, TIES top-k x scale), nine points by
default like SA's lambda x alpha grid. Every method's dev-best point is then decoded
on the test sets, so the comparison is like for like. The report (:func:`results_md`, the
"Model merging" section of RESULTS.md) also lists the two merged models themselves and their
task vector norms (:func:`norms_md`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from espnet_delta.merge import FORMULAS, MergeConfig
from espnet_delta.merge.task_norms import TaskNorm

METHOD_ORDER = ("sa", "lerp", "ta", "ties")
DEFAULT_SCHEDULES = FORMULAS  # every formula reading; local/asr.sh's --merge_schedules default lists the same
DEFAULT_LERP_COEFS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_TA_SCALES = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_TIES_TOPKS = (10.0, 20.0, 50.0)
DEFAULT_TIES_SCALES = (0.5, 1.0, 1.5)


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One merged model of a grid. ``name`` names its job directories
    (``<exp>/merge_grid/<name>`` on dev, ``<exp>/merge_<name>`` when chosen);
    ``reading`` is the SA schedule reading (formula name or file) or the method."""

    method: str
    reading: str
    name: str
    params: str
    config: MergeConfig


def _stem(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", Path(path).stem)


def sa_points(schedules: Sequence[str], lambdas: Sequence[float], alphas: Sequence[float], **common) -> List[GridPoint]:
    """Each formula over lambdas x alphas, then each schedule file as one point. A formula
    point is named ``sa_<reading>_l<lambda>_a<alpha>`` (the reading in the name keeps the
    readings' jobs apart), a file point ``sa_<file stem>``; :func:`check_unique` refuses clashes."""
    points = []
    for schedule in schedules:
        if schedule in FORMULAS:
            for lam in lambdas:
                for alpha in alphas:
                    config = MergeConfig("sa", sa_lambda=lam, sa_alpha=alpha, schedule=schedule, **common)
                    points.append(GridPoint("sa", schedule, f"sa_{schedule}_l{lam:g}_a{alpha:g}",
                                            f"lambda={lam:g} alpha={alpha:g}", config))  # fmt: skip
        else:
            config = MergeConfig("sa", schedule=schedule, **common)  # reads (and checks) the file
            points.append(GridPoint("sa", schedule, f"sa_{_stem(schedule)}", f"file {schedule}", config))
    return points


def baseline_points(
    lerp_coefs: Sequence[float] = DEFAULT_LERP_COEFS,
    ta_scales: Sequence[float] = DEFAULT_TA_SCALES,
    ties_topks: Sequence[float] = DEFAULT_TIES_TOPKS,
    ties_scales: Sequence[float] = DEFAULT_TIES_SCALES,
    **common,
) -> List[GridPoint]:
    """lerp: c (M1's weight); ta: one scale s on both task vectors; ties: top-k % x scale."""
    points = [
        GridPoint("lerp", "lerp", f"lerp_c{c:g}", f"c={c:g}", MergeConfig("lerp", coefs=[c], **common))
        for c in lerp_coefs
    ]
    points += [
        GridPoint("ta", "ta", f"ta_s{s:g}", f"scale={s:g}", MergeConfig("ta", coefs=[s], **common))
        for s in ta_scales
    ]
    points += [
        GridPoint("ties", "ties", f"ties_k{k:g}_s{s:g}", f"topk={k:g}% scale={s:g}",
                  MergeConfig("ties", ties_topk=k, ties_scale=s, **common))
        for k in ties_topks
        for s in ties_scales
    ]  # fmt: skip
    return points


def check_unique(points: Sequence[GridPoint]) -> None:
    seen: Dict[str, GridPoint] = {}
    for p in points:
        if p.name in seen:
            raise ValueError(f"two grid points share the job name {p.name!r}: {seen[p.name].params} and {p.params}")
        seen[p.name] = p


def select_best(scored: Sequence[Tuple[GridPoint, float]]) -> Tuple[GridPoint, float]:
    """The point with the lowest dev WER; the first in grid order among equal ones.
    A NaN WER (nothing scored) is never chosen unless all are NaN."""
    if not scored:
        raise ValueError("an empty grid has no best point")
    finite = [(k, wer) for k, (_, wer) in enumerate(scored) if not math.isnan(wer)]
    if not finite:
        return scored[0]
    k, _ = min(finite, key=lambda kw: (kw[1], kw[0]))
    return scored[k]


def best_per(scored: Sequence[Tuple[GridPoint, float]], key: str) -> Dict[str, Tuple[GridPoint, float]]:
    """The dev-best point per ``method`` or per ``reading``, in first-seen order."""
    groups: Dict[str, List[Tuple[GridPoint, float]]] = {}
    for p, wer in scored:
        groups.setdefault(getattr(p, key), []).append((p, wer))
    return {k: select_best(v) for k, v in groups.items()}


def grid_tsv(scored: Sequence[Tuple[GridPoint, float]], valid_set: str) -> str:
    """``method reading name params dev_wer chosen``, one row per point, then
    ``# best <method>: <name>`` lines."""
    best = best_per(scored, "method")
    chosen = {p.name for p, _ in best.values()}
    lines = [f"method\treading\tname\tparams\t{valid_set}_wer\tchosen"]
    for p, wer in scored:
        lines.append(f"{p.method}\t{p.reading}\t{p.name}\t{p.params}\t{wer:.2f}\t{'*' if p.name in chosen else ''}")
    lines += [f"# best {method}: {p.name}" for method, (p, _) in best.items()]
    return "\n".join(lines) + "\n"


def _wer(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def _ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3g}"


def norms_md(norms: Sequence[Tuple[str, str, TaskNorm]], base: str) -> List[str]:
    """The "task vector norms" table: per model (job, role) ``||tau||_2 / ||theta_base||_2`` over
    the attention Q/K/V tensors SA merging mixes and over every tensor with a task vector."""
    if not norms:
        return []
    sa, every = norms[0][2].tensors["sa"], norms[0][2].tensors["all"]
    out = [
        "",
        f"Task vector norms: tau = theta_model - theta_base, base `{base}`; ||tau||_2 / ||theta_base||_2, one L2 "
        f"norm over all entries of a set of tensors. SA: the attention Q/K/V projections SA merging mixes "
        f"({sa} tensors); all: every tensor with a task vector, i.e. with a counterpart in the base ({every} "
        "tensors; a bare SSL base: the whole upstream, not the new CTC head), what task arithmetic and TIES merge. "
        "Task-vector merging presumes these are small (docs/merging.md).",
        "",
        "|model|role|SA tensors|all tensors|",
        "|---|---|---|---|",
    ]
    out += [f"|{job}|{role}|{_ratio(n.relative('sa'))}|{_ratio(n.relative('all'))}|" for job, role, n in norms]
    return out


def results_md(
    scored: Sequence[Tuple[GridPoint, float]],
    finals: Mapping[str, Mapping[str, float]],
    valid_set: str,
    test_sets: Sequence[str],
    prefix: str = "merge",
    title: str = "Model merging",
    inputs: Optional[Mapping[str, Tuple[str, Mapping[str, float]]]] = None,
    norms: Sequence[Tuple[str, str, TaskNorm]] = (),
    base: str = "",
) -> str:
    """The section appended to RESULTS.md: the merged models (``inputs``: job name -> (role,
    set -> WER)), then each method's grid, its dev-best point and that point's WER on every set
    (``finals``: job name -> set -> WER), SA per reading, and the inputs' task vector norms
    (:func:`norms_md`). ``prefix`` names the jobs (``<prefix>_<point>``), e.g. ``merge_whisper``
    for the Whisper merges."""
    sets = list(dict.fromkeys([valid_set, *test_sets]))
    by_method = best_per(scored, "method")
    sizes = {m: sum(1 for p, _ in scored if p.method == m) for m in by_method}
    out = [
        f"## {title} (grids searched on dev)",
        "",
        f"Each method's grid was decoded on `{valid_set}`; the point with the lowest {valid_set} WER "
        "(the first of equal ones) was decoded on every set. SA merge: c_i is the child model's "
        "weight on the attention Q/K/V task vectors; every other tensor is the child's. The first "
        "rows are the two merged models themselves.",
        "",
        "|method|grid points|chosen|params|" + "|".join(f"{s} WER" for s in sets) + "|",
        "|---" * (4 + len(sets)) + "|",
    ]
    for job, (role, wers) in (inputs or {}).items():
        out.append(f"|{role}|-|{job}|-|" + "|".join(_wer(wers.get(s)) for s in sets) + "|")
    for method, (p, _) in by_method.items():
        job = f"{prefix}_{p.name}"
        wers = finals.get(job, {})
        out.append(f"|{method}|{sizes[method]}|{job}|{p.params}|" + "|".join(_wer(wers.get(s)) for s in sets) + "|")
    readings = best_per([(p, w) for p, w in scored if p.method == "sa"], "reading")
    if readings:
        out += [
            "",
            f"SA merge per schedule reading (best {valid_set} WER of each; the row above is the best of all):",
            "",
            f"|reading|grid points|best point|{valid_set} WER|",
            "|---|---|---|---|",
        ]
        for reading, (p, wer) in readings.items():
            n = sum(1 for q, _ in scored if q.method == "sa" and q.reading == reading)
            out.append(f"|{reading}|{n}|{p.params}|{_wer(wer)}|")
    out += norms_md(norms, base)
    return "\n".join(out) + "\n"


def chosen_job(exp_dir: Path, method: str, prefix: str = "merge") -> Optional[str]:
    """The job dir name (``<prefix>_<name>``) stage 8 chose for ``method``, read from the
    ``# best <method>: <name>`` line of ``<exp_dir>/<prefix>_grid.tsv``; None before stage 8."""
    path = Path(exp_dir) / f"{prefix}_grid.tsv"
    if not path.is_file():
        return None
    match = re.search(rf"^# best {re.escape(method)}: (\S+)$", path.read_text(encoding="utf-8"), re.M)
    return f"{prefix}_{match.group(1)}" if match else None
