"""The data files a rendered training reads, checked before any training of a stage starts.

A run started past the data stages with a set they did not prepare (``./run.sh --stage 3
--adult_train_set libri_train`` after stages 1-2 ran without it) used to fail inside ESPnet,
after the stage's other trainings, with a traceback. The planner (``plan ... --check_inputs
true``, what the engine's stages 4 and 7 ask for) now stops first, with one error line naming
the missing file, the stage that writes it and the rerun that does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from espnet_delta.recipe.names import DONE, Job

DATA_KEYS = ("train_data_path_and_name_and_type", "valid_data_path_and_name_and_type")
SHAPE_KEYS = ("train_shape_file", "valid_shape_file")


class MissingInputError(FileNotFoundError):
    """A training's input that an earlier stage writes does not exist (one line)."""


def config_inputs(config: Dict[str, Any]) -> List[Path]:
    """The files ESPnet opens for a config: data and shape files of both sets, the token list."""
    paths = [entry[0] for key in DATA_KEYS for entry in config.get(key) or []]
    for key in SHAPE_KEYS:
        paths += list(config.get(key) or [])
    if isinstance(config.get("token_list"), str):
        paths.append(config["token_list"])
    return [Path(p) for p in paths]


def _under(path: Path, root: Path) -> Optional[str]:
    """The set folder of ``path`` below ``root`` (``<root>/<set>/<file>``), else None."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    return rel.parts[0] if len(rel.parts) > 1 else None


def writer(path: Path, settings) -> Tuple[Optional[int], Optional[str]]:
    """(the stage that writes ``path``, its data set) from the engine's folders; (None, None) if unknown."""
    if path in (Path(settings.token_list), Path(settings.phone_token_list)):
        return 2, None
    for root, stage in ((settings.feats_dir, 6), (settings.shape_dir, 2), (settings.data_dir, 1)):
        name = _under(path, Path(root))
        if name is not None:
            return (2 if stage == 1 and path.name == "text.phn" else stage), name
    return None, None


def missing_line(job: Path, path: Path, settings, more: int) -> str:
    """One line: the job, the file, the stage writing it and the command rerunning it."""
    stage, name = writer(path, settings)
    adult = settings.adult_train_set and name in (settings.adult_train_set, settings.adult_valid_set)
    option = f" --adult_train_set {settings.adult_train_set}" if adult else ""
    extra = f" ({more} more input(s) missing)" if more else ""
    if stage is None:
        return f"{job}: its training reads {path}, which does not exist{extra}"
    last = 2 if stage <= 2 else stage
    source = " (stage 1 prepares the adult sets from --librispeech)" if adult and stage == 1 else ""
    return (f"{job}: its training reads {path}, which does not exist{extra}: stage {stage} writes it{source}; "
            f"run ./run.sh --stage {stage} --stop_stage {last}{option} with this run's other options, then this stage again")


def check_inputs(jobs: Sequence[Job], settings) -> None:
    """Raise :class:`MissingInputError` for the first job (not finished: no ``.done``) whose
    rendered config reads a file that does not exist."""
    for job in jobs:
        if job.config is None or (job.dir / DONE).is_file():
            continue
        missing = [p for p in dict.fromkeys(config_inputs(job.config())) if not p.is_file()]
        if missing:
            raise MissingInputError(missing_line(job.dir, missing[0], settings, len(missing) - 1))
