"""HuBERT-style self-supervised pre-training of the tiny upstreams (mini recipe, stage 3).

Every method of this package assumes a *pre-trained* SSL model; the tiny upstreams of
:mod:`espnet_delta.ssl.tiny` start random. This module trains them on untranscribed
audio with masked prediction of discrete units, for all three architectures alike:

* targets: k-means units of MFCC frames (iteration 1); optionally k-means units of the
  model's own hidden state ``target_layer`` (S3PRL numbering: hidden_states[l] is the
  input of transformer layer l) for a second iteration, as HuBERT does;
* masking: spans of ``mask_length`` frames (shortened to a quarter of a short
  utterance) start at a ``mask_prob / mask_length`` fraction of the *valid* frames of
  each utterance; the masked frames' CNN features are replaced by the class's own
  learned ``mask_emb``. Padded frames are never masked and never scored;
* head: a linear layer from the last hidden state (after the encoder's final
  LayerNorm, i.e. S3PRL's last hidden state) to the units; HuBERT's loss
  ``a * CE(masked) + (1 - a) * CE(unmasked)`` over valid frames (``masked_weight``
  = a; a = 1 scores masked frames only). The head is discarded: the output file is
  the input checkpoint with only the model weights replaced, so S3PRL's ``*_local``
  upstreams load it exactly as they load the random one. (HuBERT's own
  final_proj/label_embs stay as they were: their shapes are fixed by the checkpoint.)

The forward pass calls the S3PRL classes' own submodules (feature_extractor ->
layer_norm -> post_extract_proj -> mask_emb -> encoder) rather than their
``apply_mask``, whose span sampler draws from numpy's global RNG; here all randomness
comes from seeds derived from (seed, iteration, epoch), so a run, and a run resumed
from its per-epoch state, give byte-identical weights on one machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from espnet_delta.fileio import torch_save_atomic
from espnet_delta.ssl.pretrain_targets import (
    FRAME_LENGTH,
    cluster_units,
    mfcc_frames,
    num_frames,
    standardize,
)
from espnet_delta.ssl.tiny import weights_of
from espnet_delta.ssl.upstream import conv_output_lengths, conv_strides


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Schedule of one pre-training run; the defaults fit the mini recipe's budget."""

    num_clusters: int = 64
    epochs: Tuple[int, ...] = (6, 3)  # one entry per iteration (MFCC units, then layer units)
    target_layer: int = 2  # S3PRL hidden state clustered for iterations >= 2 (1..num_layers-1)
    lr: float = 3e-3
    warmup_frac: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    batch_samples: int = 16000 * 20  # padded samples per batch
    mask_prob: float = 0.65
    mask_length: int = 10
    # HuBERT's alpha: 1 = loss on masked frames only (HuBERT's choice at scale); the
    # unmasked half speeds up the CNN's learning in the mini recipe's few epochs
    masked_weight: float = 0.5
    kmeans_iters: int = 30
    max_kmeans_frames: int = 60000
    seed: int = 0


# ----------------------------------------------------------------------------- models


def detect_arch(checkpoint: Dict) -> str:
    """Which of the S3PRL local checkpoint formats of :mod:`espnet_delta.ssl.tiny` this is."""
    if "cfg" in checkpoint and "model" in checkpoint:
        return "wavlm"
    if "model_weight" in checkpoint and "dictionaries_symbols" in checkpoint:
        return "hubert"
    if "model_weight" in checkpoint and "model_cfg" in checkpoint:
        return "wav2vec2"
    raise KeyError(f"not a wavlm/hubert/wav2vec2 local checkpoint; keys: {sorted(checkpoint)}")


def build_model(checkpoint: Dict) -> Tuple[torch.nn.Module, bool]:
    """The S3PRL model of a local checkpoint with its weights, and its wave-normalize flag."""
    from s3prl.upstream.utils import merge_with_parent

    arch = detect_arch(checkpoint)
    if arch == "wavlm":
        from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

        cfg = WavLMConfig(checkpoint["cfg"])
        model, normalize = WavLM(cfg), bool(cfg.normalize)
    elif arch == "hubert":
        from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

        task = merge_with_parent(HubertPretrainingConfig, checkpoint["task_cfg"])
        model_cfg = merge_with_parent(HubertConfig, checkpoint["model_cfg"])
        model, normalize = HubertModel(model_cfg, task, checkpoint["dictionaries_symbols"]), bool(task.normalize)
    else:
        from s3prl.upstream.wav2vec2.wav2vec2_model import AudioPretrainingConfig, Wav2Vec2Config, Wav2Vec2Model

        task = merge_with_parent(AudioPretrainingConfig, checkpoint["task_cfg"])
        model = Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, checkpoint["model_cfg"]))
        normalize = bool(task.normalize)
    model.load_state_dict(weights_of(checkpoint), strict=True)
    model.encoder.layerdrop = 0.0
    return model, normalize


def checkpoint_with_weights(checkpoint: Dict, model: torch.nn.Module) -> Dict:
    """The input checkpoint (same keys and cfg) with the trained model weights."""
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = dict(checkpoint)
    out["model" if detect_arch(checkpoint) == "wavlm" else "model_weight"] = weights
    return out


def span_mask(frames: torch.Tensor, max_frames: int, mask_prob: float, mask_length: int,
              generator: torch.Generator) -> torch.Tensor:
    """(B, max_frames) bool: spans masked inside each utterance's ``frames`` valid frames.

    An utterance of n valid frames gets ``round(mask_prob * n / span + U(0,1))`` spans
    (at least one) of ``span = min(mask_length, max(1, n // 4))`` frames, starting
    uniformly in [0, n - span]; spans may overlap, as in HuBERT.
    """
    mask = torch.zeros(len(frames), max_frames, dtype=torch.bool)
    for b, n in enumerate(frames.tolist()):
        if n <= 0:
            continue
        span = min(mask_length, max(1, n // 4))
        num = max(1, int(mask_prob * n / span + float(torch.rand(1, generator=generator))))
        starts = torch.randint(n - span + 1, (num,), generator=generator)
        for s in starts.tolist():
            mask[b, s : s + span] = True
    return mask


def padded_batch(wavs: Sequence[torch.Tensor], normalize: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, samples) zero-padded batch and lengths; per-utterance standardisation as S3PRL does."""
    if normalize:
        wavs = [F.layer_norm(w, w.shape) for w in wavs]
    lengths = torch.tensor([len(w) for w in wavs])
    batch = torch.zeros(len(wavs), int(lengths.max()))
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    return batch, lengths


def encode(model: torch.nn.Module, wav: torch.Tensor, lengths: torch.Tensor,
           mask: Optional[torch.Tensor] = None, layer: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, T, D) hidden states and (B,) valid frames; masked frames get ``mask_emb``.

    ``layer=None``: the last hidden state (after the final LayerNorm); ``layer=l``:
    S3PRL's hidden_states[l], the input of transformer layer l (1 <= l < num_layers).
    """
    features = model.feature_extractor(wav).transpose(1, 2)
    features = model.layer_norm(features)
    frames = conv_output_lengths(lengths, conv_strides(model))
    padding = torch.arange(features.size(1))[None, :] >= frames[:, None]
    if model.post_extract_proj is not None:
        features = model.post_extract_proj(features)
    x = model.dropout_input(features)
    if mask is not None:  # never a padded frame, whatever the caller's mask says
        x = torch.where((mask & ~padding)[..., None], model.mask_emb.to(x.dtype), x)
    x, _ = model.encoder(x, padding_mask=padding if padding.any() else None,
                         layer=None if layer is None else layer - 1)
    return x, frames


# ----------------------------------------------------------------------------- targets


def mfcc_units(wavs: Sequence[torch.Tensor], cfg: PretrainConfig) -> List[torch.Tensor]:
    """Iteration-1 targets: k-means units of standardised MFCC frames, one per CNN frame."""
    return cluster_units(standardize([mfcc_frames(w) for w in wavs]), cfg.num_clusters, iters=cfg.kmeans_iters,
                         seed=cfg.seed, max_points=cfg.max_kmeans_frames)


@torch.no_grad()
def layer_units(model: torch.nn.Module, wavs: Sequence[torch.Tensor], normalize: bool,
                cfg: PretrainConfig, iteration: int) -> List[torch.Tensor]:
    """Later-iteration targets: k-means units of the model's own hidden state ``target_layer``."""
    num_layers = len(model.encoder.layers)
    if not 1 <= cfg.target_layer < num_layers:
        raise ValueError(f"target_layer={cfg.target_layer}; expected 1..{num_layers - 1} for this model")
    model.eval()
    feats: List[torch.Tensor] = [torch.empty(0)] * len(wavs)
    for batch in _batches([len(w) for w in wavs], cfg.batch_samples, generator=None):
        wav, lengths = padded_batch([wavs[i] for i in batch], normalize)
        x, frames = encode(model, wav, lengths, layer=cfg.target_layer)
        for j, i in enumerate(batch):
            feats[i] = x[j, : int(frames[j])].float()
    return cluster_units(standardize(feats), cfg.num_clusters, iters=cfg.kmeans_iters,
                         seed=cfg.seed + 1000 * iteration, max_points=cfg.max_kmeans_frames)


# ----------------------------------------------------------------------------- training


def _batches(lengths: Sequence[int], batch_samples: int, generator: Optional[torch.Generator]) -> List[List[int]]:
    """Length-sorted buckets of at most ``batch_samples`` padded samples; shuffled order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches, current = [], []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > batch_samples:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    if generator is not None:
        batches = [batches[j] for j in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def masked_prediction_loss(model, head, wav, lengths, targets, mask,
                           masked_weight: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """HuBERT's loss: ``a * CE(masked) + (1 - a) * CE(unmasked)`` over valid frames, and
    the unit accuracy on masked frames. ``a = masked_weight = 1`` (HuBERT's choice)
    scores the masked frames only."""
    x, frames = encode(model, wav, lengths, mask=mask)
    valid = torch.arange(x.size(1))[None, :] < frames[:, None]
    scored = mask & valid
    logits = head(x[scored])
    loss = F.cross_entropy(logits, targets[scored])
    accuracy = (logits.argmax(-1) == targets[scored]).float().mean()
    if masked_weight < 1.0:
        unmasked = ~mask & valid
        loss = masked_weight * loss + (1.0 - masked_weight) * F.cross_entropy(head(x[unmasked]), targets[unmasked])
    return loss, accuracy


def _epoch_seed(cfg: PretrainConfig, iteration: int, epoch: int) -> int:
    return (cfg.seed * 1_000_003 + iteration * 1009 + epoch) % (2**63)


def _new_state(model, cfg: PretrainConfig, iteration: int, steps: int):
    torch.manual_seed(_epoch_seed(cfg, iteration, -1))
    head = torch.nn.Linear(model.encoder.embedding_dim, cfg.num_clusters)
    params = list(model.parameters()) + list(head.parameters())
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, int(cfg.warmup_frac * steps))

    def schedule(step: int) -> float:  # linear warm-up, then cosine decay to 5 %
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return head, optim, torch.optim.lr_scheduler.LambdaLR(optim, schedule)


def pretrain(
    in_checkpoint: Path,
    out_checkpoint: Path,
    wavs: Sequence[torch.Tensor],
    work_dir: Path,
    cfg: PretrainConfig = PretrainConfig(),
    progress: bool = True,
) -> Path:
    """Pre-train one tiny upstream; skipped when ``out_checkpoint`` exists.

    ``work_dir`` keeps a state after every epoch (model, head, optimiser, scheduler)
    and the targets of each iteration, so a killed run resumes at the next epoch; a
    state written under another config or audio list is ignored (clean restart).
    """
    in_checkpoint, out_checkpoint, work_dir = Path(in_checkpoint), Path(out_checkpoint), Path(work_dir)
    if out_checkpoint.exists():
        logging.info("pre-trained upstream exists, skipping: %s", out_checkpoint)
        return out_checkpoint
    if not in_checkpoint.is_file():
        raise FileNotFoundError(f"upstream checkpoint to pre-train not found: {in_checkpoint}")
    too_short = [i for i, w in enumerate(wavs) if len(w) < FRAME_LENGTH]
    if too_short:
        raise ValueError(f"{len(too_short)} utterances are shorter than one frame ({FRAME_LENGTH} samples), "
                         f"e.g. index {too_short[0]}")
    if not cfg.epochs or min(cfg.epochs) < 1:
        raise ValueError(f"epochs={cfg.epochs}: expected at least one positive entry per iteration")
    checkpoint = torch.load(in_checkpoint, map_location="cpu", weights_only=True)
    try:
        detect_arch(checkpoint)
    except (KeyError, TypeError) as e:  # a torch file of something else: one line naming it
        raise ValueError(f"{in_checkpoint}: not a wavlm/hubert/wav2vec2 local checkpoint ({e})") from None
    identity = {"config": dataclasses.asdict(cfg), "audio": _fingerprint(wavs),
                "input": hashlib.sha256(in_checkpoint.read_bytes()).hexdigest()}
    with torch.random.fork_rng(devices=[]):
        model, normalize = build_model(checkpoint)
        state = _load_state(work_dir / "state.pt", identity)
        first = (1, 0) if state is None else (state["iteration"], state["epoch"])
        if state is not None:
            model.load_state_dict(state["model"])
        for iteration in range(first[0], len(cfg.epochs) + 1):
            start = first[1] if iteration == first[0] else 0
            if start >= cfg.epochs[iteration - 1]:
                continue  # finished before the kill
            targets = _targets(work_dir / f"targets_iter{iteration}.pt", identity, model, wavs, normalize, cfg,
                               iteration, resuming=start > 0)
            _train_iteration(model, normalize, wavs, targets, cfg, iteration, start,
                             state if start > 0 else None, work_dir / "state.pt", identity,
                             f"{in_checkpoint.stem}", progress)
            state = None
    torch_save_atomic(checkpoint_with_weights(checkpoint, model), out_checkpoint)
    logging.info("wrote pre-trained upstream %s", out_checkpoint)
    return out_checkpoint


def _train_iteration(model, normalize, wavs, targets, cfg: PretrainConfig, iteration: int, start: int,
                     state: Optional[Dict], state_path: Path, identity: Dict, name: str, progress: bool) -> None:
    """Epochs ``start``.. of one iteration; a state is saved after each epoch."""
    from tqdm import tqdm

    epochs = cfg.epochs[iteration - 1]
    lengths = [len(w) for w in wavs]
    head, optim, sched = _new_state(model, cfg, iteration, epochs * len(_batches(lengths, cfg.batch_samples, None)))
    if state is not None:
        head.load_state_dict(state["head"])
        optim.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        logging.info("%s: resuming iteration %d at epoch %d", name, iteration, start + 1)
    for epoch in range(start, epochs):
        torch.manual_seed(_epoch_seed(cfg, iteration, epoch))  # dropout
        gen = torch.Generator().manual_seed(_epoch_seed(cfg, iteration, epoch))  # batch order, masks
        model.train()
        total, correct, n = 0.0, 0.0, 0
        bar = tqdm(_batches(lengths, cfg.batch_samples, gen), desc=f"{name} it{iteration} ep{epoch + 1}/{epochs}",
                   disable=not progress, leave=False)
        for batch in bar:
            wav, wav_lengths = padded_batch([wavs[i] for i in batch], normalize)
            frames = num_frames(wav_lengths)
            tgt = torch.zeros(len(batch), int(frames.max()), dtype=torch.long)
            for j, i in enumerate(batch):
                tgt[j, : len(targets[i])] = targets[i]
            mask = span_mask(frames, tgt.size(1), cfg.mask_prob, cfg.mask_length, gen)
            loss, accuracy = masked_prediction_loss(model, head, wav, wav_lengths, tgt, mask, cfg.masked_weight)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(head.parameters()), cfg.grad_clip)
            optim.step()
            sched.step()
            total, correct, n = total + loss.item(), correct + accuracy.item(), n + 1
            bar.set_postfix(loss=f"{total / n:.3f}")
        logging.info("%s iteration %d epoch %d/%d: cross-entropy %.4f, masked-frame unit accuracy %.3f (%d batches)",
                     name, iteration, epoch + 1, epochs, total / n, correct / n, n)
        torch_save_atomic(dict(identity, iteration=iteration, epoch=epoch + 1, model=model.state_dict(),
                         head=head.state_dict(), optim=optim.state_dict(), sched=sched.state_dict()), state_path)


def _load_state(path: Path, identity: Dict) -> Optional[Dict]:
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if any(state.get(k) != v for k, v in identity.items()):
        logging.warning("%s was written for another config, input or audio list; restarting from scratch", path)
        return None
    return state


def _fingerprint(wavs: Sequence[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for w in wavs:
        h.update(str(len(w)).encode())
        h.update(w.numpy().tobytes())
    return h.hexdigest()


def _targets(path: Path, identity: Dict, model, wavs, normalize: bool, cfg: PretrainConfig,
             iteration: int, resuming: bool) -> List[torch.Tensor]:
    """The units of one iteration, computed once per run and kept in the work dir."""
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if all(saved.get(k) == v for k, v in identity.items()):
            return saved["units"]
    if resuming and iteration > 1:
        raise RuntimeError(f"{path} is missing or stale, and the targets of iteration {iteration} cannot be "
                           f"recomputed from a half-trained model; delete {path.parent} to restart")
    units = mfcc_units(wavs, cfg) if iteration == 1 else layer_units(model, wavs, normalize, cfg, iteration)
    frames = conv_output_lengths(torch.tensor([len(w) for w in wavs]), conv_strides(model)).tolist()
    for i, (u, n) in enumerate(zip(units, frames)):
        if len(u) != n:
            raise RuntimeError(f"utterance {i}: {len(u)} target units for {n} CNN frames; the CNN must have "
                               f"a {FRAME_LENGTH}-sample receptive field and a 320-sample hop")
    torch_save_atomic(dict(identity, units=units), path)
    return units
