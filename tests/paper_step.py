"""One optimizer step of a rendered training config, as ESPnet's trainer starts a training.

The steps of ``AbsTask.main_worker`` up to the first update, in its order: parse the config
with ESPnet's own parser (unknown keys fail), seed, ``build_model``, ``freeze_param``,
``build_optimizers``, the scheduler class of the config, ``init_param``; then one forward,
backward, gradient clipping and ``optimizer.step()`` on a synthetic batch. What is checked
(:class:`StepResult`): the loss; the ``freeze_param`` entries that name no parameter (ESPnet
ignores them, silently training what the config meant to freeze); frozen parameters that
changed; trainable ones with a non-zero gradient that did not; trainable ones outside the
loss's graph (ESPnet's DDP, ``find_unused_parameters`` = ``unused_parameters: false`` by
default, stops at the second iteration on them).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Dict, List, Optional

import torch

#: a character token list of ESPnet's layout (blank first, sos/eos last)
VOCAB = ["<blank>", "<unk>", "A", "B", "C", "D", "E", "<space>", "'", "<sos/eos>"]


def write_token_list(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(VOCAB) + "\n")
    return path


def espnet_args(config: Path, out_dir: Path) -> argparse.Namespace:
    """ESPnet's ASR training options from ``config`` (a train.yaml), as ``asr_train --config`` parses them."""
    from espnet2.tasks.asr import ASRTask

    from espnet_delta.asr.register import register

    register()
    args = ASRTask.get_parser().parse_args(["--config", str(config), "--output_dir", str(out_dir), "--ngpu", "0"])
    ASRTask.check_required_command_args(args)
    return args


def frozen_by(model: torch.nn.Module, freeze_param: List[str]) -> Dict[str, List[str]]:
    """freeze_param entry -> the parameters it names (ESPnet's rule: the name or a ``name.`` prefix)."""
    names = [k for k, _ in model.named_parameters()]
    return {t: [k for k in names if k == t or k.startswith(t + ".")] for t in freeze_param}


def build(args: argparse.Namespace):
    """(model, optimizer, scheduler) as ESPnet's main_worker builds them, init_param loaded."""
    from espnet2.tasks.abs_task import scheduler_classes
    from espnet2.tasks.asr import ASRTask
    from espnet2.torch_utils.load_pretrained_model import load_pretrained_model
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    set_all_random_seed(args.seed)
    model = ASRTask.build_model(args).to(dtype=getattr(torch, args.train_dtype))
    for names in frozen_by(model, args.freeze_param).values():
        for name, p in model.named_parameters():
            if name in names:
                p.requires_grad = False
    optimizer, = ASRTask.build_optimizers(args, model=model)
    scheduler = None
    if args.scheduler is not None:
        scheduler = scheduler_classes[args.scheduler](optimizer, **args.scheduler_conf)
    for init in args.init_param:
        load_pretrained_model(model=model, init_param=init, ignore_init_mismatch=args.ignore_init_mismatch,
                              map_location="cpu")
    return model, optimizer, scheduler


@dataclasses.dataclass
class StepResult:
    loss: float
    parameters: int
    trainable: List[str]
    frozen: List[str]
    freeze_unmatched: List[str]  # freeze_param entries naming no parameter
    frozen_changed: List[str]
    not_updated: List[str]  # trainable, a non-zero gradient, yet unchanged by the step
    unused: List[str]  # trainable, no gradient: not in the loss's graph (ESPnet's DDP needs unused_parameters)
    zero_gradient: List[str]  # trainable, in the graph, an all-zero gradient (e.g. keys of a zero query)


def step(args: argparse.Namespace, batch: Dict[str, torch.Tensor], lr: Optional[float] = None) -> StepResult:
    """Build and take one update on ``batch`` (ESPnet's model inputs). The warm-up schedules of
    the paper configs start at lr ~0 (2e-8 for Whisper: below float32's resolution at 1.0), so
    the update runs at ``lr`` (default the config's ``optim_conf.lr``, the schedule's peak)."""
    model, optimizer, _ = build(args)
    for group in optimizer.param_groups:
        group["lr"] = lr if lr is not None else args.optim_conf["lr"]
    params = dict(model.named_parameters())
    before = {k: p.detach().clone() for k, p in params.items()}
    model.train()
    loss, _, _ = model(**batch)
    loss.backward()
    if args.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    optimizer.step()
    trainable = [k for k, p in params.items() if p.requires_grad]
    frozen = [k for k, p in params.items() if not p.requires_grad]
    graded = [k for k in trainable if params[k].grad is not None and bool(params[k].grad.abs().sum() > 0)]
    return StepResult(
        loss=float(loss.detach()),
        parameters=sum(p.numel() for p in params.values()),
        trainable=trainable,
        frozen=frozen,
        freeze_unmatched=[t for t, names in frozen_by(model, args.freeze_param).items() if not names],
        frozen_changed=[k for k in frozen if not torch.equal(before[k], params[k].detach())],
        not_updated=[k for k in graded if torch.equal(before[k], params[k].detach())],
        unused=[k for k in trainable if params[k].grad is None],
        zero_gradient=[k for k in trainable if params[k].grad is not None and k not in set(graded)],
    )


def waveform_batch(seconds=(0.5, 0.35), rate: int = 16000, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Short synthetic utterances (noise) with 3-4 character targets each."""
    gen = torch.Generator().manual_seed(seed)
    lengths = [int(s * rate) for s in seconds]
    speech = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        speech[i, :n] = 0.1 * torch.randn(n, generator=gen)
    return {"speech": speech, "speech_lengths": torch.tensor(lengths), **targets(len(lengths))}


def feature_batch(dim: int, frames=(50, 38), seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random cached feature matrices (B, T, dim), as ESPnet's kaldi_ark loader pads them."""
    gen = torch.Generator().manual_seed(seed)
    speech = torch.zeros(len(frames), max(frames), dim)
    for i, n in enumerate(frames):
        speech[i, :n] = torch.randn(n, dim, generator=gen)
    return {"speech": speech, "speech_lengths": torch.tensor(list(frames)), **targets(len(frames))}


def targets(n: int) -> Dict[str, torch.Tensor]:
    rows = [[2, 3, 7, 4], [5, 6, 2]][:n] + [[3, 4, 5]] * max(0, n - 2)
    text = torch.full((n, max(len(r) for r in rows)), -1, dtype=torch.long)  # ESPnet pads text with -1
    for i, r in enumerate(rows):
        text[i, :len(r)] = torch.tensor(r)
    return {"text": text, "text_lengths": torch.tensor([len(r) for r in rows])}
