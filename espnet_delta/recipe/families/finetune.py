"""CTC fine-tuning of each SSL upstream (stage 4): ``ft_<name>`` on the child train set, and
with ``--adult_train_set`` ``ft_<name>_adult`` of the reference (merged in stage 8) and of
``--adult_upstreams`` (deltas of adult models, Table 4 of arXiv 2601.20142).

A config is ``--finetune_config`` with its ``per_model.<name>`` overrides (the paper warms
wav2vec2 up longer) and the upstream's entry of ``--upstream_conf`` as
``frontend_conf.frontend_conf``. Stage 5 decodes the child models; stage 8 the merged ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

from espnet_delta.recipe.names import CKPT_WER, Job, ft_dir
from espnet_delta.recipe.train_config import data_keys, render

FAMILY = "finetune"


def adult_names(settings) -> List[str]:
    """The reference, then ``--adult_upstreams`` (each once)."""
    names = [settings.upstreams[0]]
    names += [n for n in settings.adult_upstreams if n not in names]
    return names


def job(settings, name: str, train_set: str, valid_set: str, adult: bool) -> Job:
    def config() -> dict:
        conf = render(settings.finetune_config, per_model=name,
                      set_from=[f"{settings.upstream_conf}:{name}=frontend_conf.frontend_conf"])
        conf.update(data_keys(settings.data_dir, settings.shape_dir, train_set, valid_set, settings.token_type,
                              settings.token_list))
        return conf

    return Job(ft_dir(settings.exp_dir, name, adult), FAMILY, CKPT_WER, decoded=not adult, config=config)


def jobs(settings) -> List[Job]:
    if settings.adult_upstreams and not settings.adult_train_set:
        raise ValueError(f"--adult_upstreams {' '.join(settings.adult_upstreams)} fine-tunes on --adult_train_set; "
                         "set it (e.g. libri_train)")
    if not settings.finetune_config:
        return []
    out = [job(settings, name, settings.train_set, settings.valid_set, False) for name in settings.upstreams]
    if settings.adult_train_set:
        out += [job(settings, name, settings.adult_train_set, settings.adult_valid_set, True)
                for name in adult_names(settings)]
    return out


def finetuned_checkpoint(settings, name: str, adult: bool = False) -> Path:
    return ft_dir(settings.exp_dir, name, adult) / CKPT_WER
