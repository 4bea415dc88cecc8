"""CTC fine-tuning of each SSL upstream (stage 4): ``ft_<name>`` on the child train set, and
with ``--adult_train_set`` ``ft_<name>_adult`` of the reference (merged in stage 8) and of
``--adult_upstreams`` (deltas of adult models, Table 4 of arXiv 2601.20142).

A config is ``--finetune_config`` with its ``per_model.<name>`` overrides (the paper warms
wav2vec2 up longer) and the upstream's entry of ``--upstream_conf`` as
``frontend_conf.frontend_conf``. Stage 5 decodes the child models; stage 8 the merged ones.

``--merge_finetune_config`` (with ``--adult_train_set``): the two models stage 8 merges are
fine-tuned with it instead, so that their task vectors stay small next to the shared base
(the premise of task-vector merging, docs/merging.md): ``ft_<ref>_merge`` on the child train
set (decoded in stage 5: its own RESULTS.md row) and ``ft_<ref>_adult``; ``ft_<ref>`` keeps
``--finetune_config`` (the fusion reference).

``--finetune_train_set`` (the engine's ``<train_set>_sp`` under ``--speed_perturb_factors``): the
set the child fine-tunings ``ft_<name>`` train on; the adult, merge and every other family keep
their sets (the merge regime's small task vectors, the fusion heads' cached features).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional

from espnet_delta.recipe.names import CKPT_WER, Job, ft_dir, ft_merge_dir
from espnet_delta.recipe.train_config import data_keys, render

FAMILY = "finetune"


def adult_names(settings) -> List[str]:
    """The reference, then ``--adult_upstreams`` (each once)."""
    names = [settings.upstreams[0]]
    names += [n for n in settings.adult_upstreams if n not in names]
    return names


def job(settings, name: str, train_set: str, valid_set: str, adult: bool, config_file: Optional[Path] = None,
        job_dir: Optional[Path] = None) -> Job:
    """One fine-tuning; ``config_file`` defaults to ``--finetune_config``, ``job_dir`` to ``ft_<name>[_adult]``."""
    config_file = config_file or settings.finetune_config

    def config() -> dict:
        conf = render(config_file, per_model=name,
                      set_from=[f"{settings.upstream_conf}:{name}=frontend_conf.frontend_conf"])
        conf.update(data_keys(settings.data_dir, settings.shape_dir, train_set, valid_set, settings.token_type,
                              settings.token_list))
        return conf

    return Job(job_dir or ft_dir(settings.exp_dir, name, adult), FAMILY, CKPT_WER, decoded=not adult, config=config)


def merge_config(settings) -> Optional[Path]:
    """``--merge_finetune_config`` when stage 8 will merge (an adult set is given), else None."""
    conf = getattr(settings, "merge_finetune_config", None)
    if conf and not settings.adult_train_set:
        logging.warning("--merge_finetune_config %s is for stage 8's merge, which needs --adult_train_set: not used",
                        conf)
        return None
    return conf or None


def jobs(settings) -> List[Job]:
    if settings.adult_upstreams and not settings.adult_train_set:
        raise ValueError(f"--adult_upstreams {' '.join(settings.adult_upstreams)} fine-tunes on --adult_train_set; "
                         "set it (e.g. libri_train)")
    merge_conf = merge_config(settings)
    out = []
    if settings.finetune_config:
        child_set = settings.finetune_train_set or settings.train_set
        out += [job(settings, name, child_set, settings.valid_set, False) for name in settings.upstreams]
    if merge_conf:
        reference = settings.upstreams[0]
        out.append(job(settings, reference, settings.train_set, settings.valid_set, False, merge_conf,
                       ft_merge_dir(settings.exp_dir, reference)))
    if settings.adult_train_set:
        for name in adult_names(settings):
            conf = merge_conf if merge_conf and name == settings.upstreams[0] else settings.finetune_config
            if conf:
                out.append(job(settings, name, settings.adult_train_set, settings.adult_valid_set, True, conf))
    return out


def merge_child_dir(settings) -> Path:
    """Stage 8's child model (M1): ``ft_<ref>_merge`` under ``--merge_finetune_config``, else ``ft_<ref>``."""
    reference = settings.upstreams[0]
    if merge_config(settings):
        return ft_merge_dir(settings.exp_dir, reference)
    return ft_dir(settings.exp_dir, reference)


def finetuned_checkpoint(settings, name: str, adult: bool = False) -> Path:
    return ft_dir(settings.exp_dir, name, adult) / CKPT_WER
