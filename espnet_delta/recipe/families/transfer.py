"""Further fine-tuning of the transfer experiment (local/transfer.sh stage 5; arXiv 2501.08468):
in the second corpus's exp dir, ``transfer_s<lambda>_ft`` continues the zero-shot transferred
model ``transfer_s<lambda>`` and (the control) ``ft_<ref>_further`` the corpus's own baseline
``ft_<ref>``, each ``--further_epochs`` on ``--train_set`` at the constant learning rate
``--further_lr``, from the ``--finetune_config`` of the reference (its per-model schedule
overrides do not apply: the schedule is replaced).
"""

from __future__ import annotations

from typing import List

from espnet_delta.recipe.names import CKPT_WER, Job, ft_dir, transfer_dir
from espnet_delta.recipe.train_config import data_keys, render

FAMILY = "transfer"


def jobs(settings) -> List[Job]:
    if settings.transfer_scale is None:
        raise ValueError("the transfer family needs --transfer_scale (the lambda chosen on the dev set)")
    ref = settings.upstreams[0]
    exp = settings.exp_dir
    transferred, baseline = transfer_dir(exp, settings.transfer_scale), ft_dir(exp, ref)
    pairs = [(transferred, exp / f"{transferred.name}_ft"), (baseline, exp / f"{baseline.name}_further")]
    out = []
    for init, job in pairs:
        sets = [f"init_param=[{init / CKPT_WER}]", f"max_epoch={settings.further_epochs}",
                f"optim_conf.lr={settings.further_lr}", "scheduler=null", "scheduler_conf={}"]

        def config(sets=sets) -> dict:
            conf = render(settings.finetune_config, set_from=[f"{settings.upstream_conf}:{ref}=frontend_conf.frontend_conf"],
                          sets=sets)
            conf.update(data_keys(settings.data_dir, settings.shape_dir, settings.train_set, settings.valid_set,
                                  settings.token_type, settings.token_list))
            return conf

        out.append(Job(job, FAMILY, CKPT_WER, config=config))
    return out
