"""Where the recipe's jobs live and what each one leaves: job folders, the checkpoint each
family decodes, decode and score paths, and the result fragments RESULTS.md appends.

Every stage, command and shell script asks here (the shell through ``python -m
espnet_delta.recipe.plan names``), so a name changes in one place. ESPnet names a
checkpoint ``<phase>.<key>.best.pth`` after the first ``best_model_criterion`` of the
config: the CTC fine-tunings select on the dev greedy-CTC WER, the phone systems on the
dev loss (ESPnet's ``cer_ctc`` and our ``wer_ctc`` join phones into one string, which is
no phone error rate), Whisper on the dev attention accuracy.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

PathLike = Union[str, Path]

CKPT_WER = "valid.wer_ctc.best.pth"  # characters: dev greedy-CTC WER
CKPT_LOSS = "valid.loss.best.pth"  # phones: dev loss
CKPT_ACC = "valid.acc.best.pth"  # Whisper: dev attention accuracy
#: unit -> (ESPnet token_type, text file of each data dir, best_model_criterion override, checkpoint)
UNITS: Dict[str, Tuple[Optional[str], str, Optional[list], str]] = {
    "char": (None, "text", None, CKPT_WER),  # None: the recipe's --token_type
    "phn": ("word", "text.phn", [["valid", "loss", "min"]], CKPT_LOSS),
}
UNIT_CHECKPOINTS = {unit: spec[3] for unit, spec in UNITS.items()}
#: what decodes a job: greedy CTC (espnet_delta.bin.decode) or beam search (espnet_delta.bin.beam_decode)
DECODERS = ("greedy", "beam")
INPUT_TYPES = ("sound", "kaldi_ark")

# job folder prefixes
FT_PREFIX = "ft_"
ADULT_SUFFIX = "_adult"
DONE = ".done"  # a finished training's marker in its job folder (train_jobs writes it)
MERGE_SUFFIX = "_merge"  # the child model of stage 8 under --merge_finetune_config
PROBE_PREFIX = "probe_"
PROBE_KINDS = ("pretrained", "random")
INTERFACE_PREFIX = "if_"
SSHR_PREFIX = "sshr_"
FUSION_PREFIX = "fusion_"
TRANSFER_PREFIX = "transfer_s"
WHISPER_NAME = "whisper"

# files inside a job dir
TRAIN_CONFIG = "train.yaml"  # what the planner renders
TRAINED_CONFIG = "config.yaml"  # what ESPnet writes when a training starts
DECODE_DIR = "decode"
SCORE_DIRS = {"char": "score_wer", "phn": "score_per"}
SCORE_JSON = "score.json"

#: result fragments under the exp dir, in the order RESULTS.md appends them
FRAGMENTS: Dict[str, str] = {
    "paper_tables": "paper_tables.md",  # local/paper_tables.sh
    "interface": "interface_results.md",  # stage 5, --interface_systems
    "merge": "merge_results.md",  # stage 8
    "merge_whisper": "merge_whisper_results.md",  # stage 8, --whisper_config
    "transfer": "transfer_results.md",  # local/transfer.sh
    "figures": "analysis/figures.md",  # stage 10
    "sshr": "sshr_results.md",  # stage 5, --sshr_systems
    "langid_probe": "analysis/langid_probe.md",  # stage 5, --langid_probe true
}
ANALYSIS_DIR = "analysis"


def ft_dir(exp_dir: PathLike, name: str, adult: bool = False) -> Path:
    """``ft_<name>`` (child speech) or ``ft_<name>_adult``."""
    return Path(exp_dir) / f"{FT_PREFIX}{name}{ADULT_SUFFIX if adult else ''}"


def ft_merge_dir(exp_dir: PathLike, name: str) -> Path:
    """``ft_<name>_merge``: ``name`` fine-tuned on child speech with ``--merge_finetune_config`` (stage 8's M1)."""
    return Path(exp_dir) / f"{FT_PREFIX}{name}{MERGE_SUFFIX}"


def ft_checkpoint_pattern(exp_dir: PathLike, adult: bool = False) -> str:
    """``<exp>/ft_{name}/valid.wer_ctc.best.pth``: the fine-tuned model of each upstream, ``{name}`` replaced."""
    return str(ft_dir(exp_dir, "{name}", adult) / CKPT_WER)


def probe_dir(exp_dir: PathLike, reference: str, kind: str) -> Path:
    return Path(exp_dir) / f"{PROBE_PREFIX}{reference}_{kind}"


def interface_dir(exp_dir: PathLike, system: str, unit: str) -> Path:
    return Path(exp_dir) / f"{INTERFACE_PREFIX}{system}_{unit}"


def sshr_dir(exp_dir: PathLike, system: str, unit: str) -> Path:
    return Path(exp_dir) / f"{SSHR_PREFIX}{system}_{unit}"


def fusion_dir(exp_dir: PathLike, system: str) -> Path:
    return Path(exp_dir) / f"{FUSION_PREFIX}{system}"


def transfer_dir(exp_dir: PathLike, scale: str) -> Path:
    """``transfer_s<lambda>``: the zero-shot transferred model of one scale (local/transfer.sh)."""
    return Path(exp_dir) / f"{TRANSFER_PREFIX}{scale}"


def parse_unit_job(job: PathLike, prefix: str) -> Tuple[str, str]:
    """``<prefix><system>_<unit>`` -> (system, unit)."""
    name = Path(job).name
    system, _, unit = name[len(prefix):].rpartition("_")
    if not name.startswith(prefix) or not system or unit not in UNITS:
        raise ValueError(f"{job}: not a job dir {prefix}<system>_<unit> (unit in {sorted(UNITS)})")
    return system, unit


def decode_dir(job: PathLike, test_set: str) -> Path:
    return Path(job) / DECODE_DIR / test_set


def score_dir(job: PathLike, test_set: str, unit: str = "char") -> Path:
    return decode_dir(job, test_set) / SCORE_DIRS[unit]


def fragment(exp_dir: PathLike, key: str) -> Path:
    return Path(exp_dir) / FRAGMENTS[key]


def present_fragments(exp_dir: PathLike) -> List[Path]:
    """The fragments that exist, in RESULTS.md order."""
    return [p for p in (Path(exp_dir) / f for f in FRAGMENTS.values()) if p.is_file()]


def scored_dirs(exp_dir: PathLike) -> List[Path]:
    """Every ``<exp>/<job>/decode/<set>/score_wer`` holding a score.json, sorted (as a shell glob)."""
    return sorted(d for d in Path(exp_dir).glob(f"*/{DECODE_DIR}/*/{SCORE_DIRS['char']}") if (d / SCORE_JSON).is_file())


def is_trained(job: PathLike, checkpoint: Optional[str] = None) -> bool:
    """True once ESPnet has started training the job (its config.yaml) or left its checkpoint."""
    job = Path(job)
    return (job / TRAINED_CONFIG).is_file() or (checkpoint is not None and (job / checkpoint).is_file())


@dataclasses.dataclass
class Job:
    """One training job of a family and how it is decoded.

    ``config`` renders the job's ESPnet config (called only when the planner writes);
    ``needs`` are files of other jobs the rendering reads (a job needing stage-4 models
    trains after them); ``decoded``: stage 5 (or 9) decodes and scores it.
    """

    dir: Path
    family: str
    checkpoint: str = CKPT_WER
    unit: str = "char"
    input_type: str = "sound"
    decoder: str = "greedy"
    decoded: bool = True
    needs: Tuple[Path, ...] = ()
    config: Optional[Callable[[], dict]] = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def decode_key(self) -> Tuple[str, str, str, str]:
        """Jobs with equal keys are decoded by one command."""
        return (self.decoder, self.checkpoint, self.unit, self.input_type)
