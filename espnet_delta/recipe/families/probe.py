"""Frozen-upstream probes (stage 4, ``--probe_config``): the reference's layers through a
weighted sum and a linear CTC head, once on its pre-trained checkpoint
(``probe_<ref>_pretrained``) and once on the random one of ``--tiny_upstream_dir``
(``probe_<ref>_random``): what the pre-training put into the layers.
"""

from __future__ import annotations

from typing import List

from espnet_delta.recipe.names import CKPT_WER, PROBE_KINDS, Job, probe_dir
from espnet_delta.recipe.train_config import data_keys, render

FAMILY = "probe"


def jobs(settings) -> List[Job]:
    if not settings.probe_config:
        return []
    if not settings.tiny_upstream_dir:
        raise ValueError("--probe_config compares with the random checkpoints of --tiny_upstream_dir; set it")
    reference = settings.upstreams[0]
    out = []
    for kind in PROBE_KINDS:
        sets = [f"frontend_conf.upstream.path_or_url={settings.tiny_upstream_dir}/{reference}.pt"] if kind == "random" else []

        def config(sets=sets) -> dict:
            conf = render(settings.probe_config, set_from=[f"{settings.upstream_conf}:{reference}=frontend_conf.upstream"],
                          sets=sets)
            conf.update(data_keys(settings.data_dir, settings.shape_dir, settings.train_set, settings.valid_set,
                                  settings.token_type, settings.token_list))
            return conf

        out.append(Job(probe_dir(settings.exp_dir, reference, kind), FAMILY, CKPT_WER, config=config))
    return out
