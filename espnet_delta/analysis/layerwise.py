"""Layer-wise similarity of pre-trained, fine-tuned and delta representations.

Figures 1 and 2 of "Mind the Shift" (arXiv 2601.20142): for each SSL model with a
pre-trained checkpoint and a CTC fine-tuned one, and for every hidden state l
(S3PRL indexing: 0 = transformer input, N = encoder output),

* ``pt_vs_ft``: similarity(E_pt^l, E_ft^l) (Figure 1; X = pre-trained);
* ``ft_vs_delta``: similarity(E_ft^l, E_delta^l), E_delta = E_ft - E_pt (Figure 2;
  X = fine-tuned),

each as mean CCA and PWCCA (:mod:`espnet_delta.analysis.similarity`; PWCCA weights
come from X). When the fine-tuned state equals the pre-trained one, delta is zero
and ``ft_vs_delta`` is undefined: its value is NaN (a gap in the figure), logged.

Frames: a seeded sample of at most ``max_utts`` utterances of a wav.scp, and of
their frames (exact per-utterance counts, padding removed) at most ``max_frames``,
drawn uniformly without replacement with the same seed; the frame choice is fixed
from the audio lengths before any model runs, so the pre-trained and fine-tuned
models see the same frames and memory stays at ``2 x states x max_frames x D``
float32 values per model. Hidden states are taken raw (``hidden_norm: none``, CCA
is invariant to per-dimension scale) unless another ``hidden_norm`` of
:func:`espnet_delta.ssl.embeddings.select_hidden_state` is asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from espnet_delta.analysis.outputs import file_fingerprint, load_cache, save_cache
from espnet_delta.analysis.similarity import KEEP_VARIANCE, cca_reduced, reduce_svd
from espnet_delta.data.wav_scp import AudioItem, AudioReader, read_wav_scp
from espnet_delta.features.audio import make_batches

COMPARISONS = ("pt_vs_ft", "ft_vs_delta")
MEASURES = ("mean_cca", "pwcca")
CSV_HEADER = ("model", "layer", "measure", "comparison", "value")


@dataclasses.dataclass(frozen=True)
class AnalysisModel:
    """One model of the analysis: S3PRL upstream, pre-trained checkpoint, fine-tuned checkpoint."""

    name: str
    upstream: str
    path_or_url: Optional[str]
    finetuned: str


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    max_utts: int = 64
    max_frames: int = 20000
    seed: int = 0
    batch_size: int = 8
    batch_samples: int = 16000 * 60
    hidden_norm: str = "none"
    keep_variance: float = KEEP_VARIANCE
    device: str = "cpu"

    def fingerprint(self) -> Dict[str, object]:
        """The options that change the numbers (batching and device do not)."""
        return {k: getattr(self, k) for k in ("max_utts", "max_frames", "seed", "hidden_norm", "keep_variance")}


def models_from_conf(
    upstream_conf: Dict[str, dict], names: Sequence[str], finetuned: str, where: str
) -> List[AnalysisModel]:
    """Models named in ``names`` whose fine-tuned checkpoint (``finetuned`` with ``{name}``) exists."""
    models = []
    for name in names:
        if "," in name:
            raise ValueError(f"{where}: model name {name!r} contains a comma (it is a CSV field)")
        entry = upstream_conf.get(name)
        if not isinstance(entry, dict) or "upstream" not in entry:
            raise ValueError(f"{where}: no entry {name!r} with an 'upstream' key (has {sorted(upstream_conf)})")
        ft = finetuned.replace("{name}", name)
        if not Path(ft).is_file():
            logging.warning("%s: no fine-tuned checkpoint %s; skipped in the layer-wise analysis", name, ft)
            continue
        models.append(AnalysisModel(name, entry["upstream"], entry.get("path_or_url"), ft))
    return models


def sample_utterances(wav_scp: Path, max_utts: int, seed: int) -> List[AudioItem]:
    """At most ``max_utts`` utterances, a seeded uniform sample (returned sorted by id)."""
    items = read_wav_scp(wav_scp)
    if len(items) <= max_utts:
        return items
    chosen = np.random.default_rng(seed).choice(len(items), size=max_utts, replace=False)
    return [items[i] for i in sorted(chosen)]


def frame_plan(frame_counts: Sequence[int], max_frames: int, seed: int) -> List[np.ndarray]:
    """Per utterance, the (sorted) frame indices to keep: a seeded uniform sample of
    at most ``max_frames`` of all pooled frames."""
    counts = np.asarray(frame_counts, dtype=np.int64)
    total = int(counts.sum())
    if total <= max_frames:
        return [np.arange(n) for n in counts]
    picked = np.sort(np.random.default_rng(seed + 1).choice(total, size=max_frames, replace=False))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return [picked[(picked >= lo) & (picked < hi)] - lo for lo, hi in zip(offsets[:-1], offsets[1:])]


class HiddenStateSampler:
    """Runs upstreams on the sampled utterances and keeps the planned frames of every state.

    The wav.scp and audio lengths are read on first use, so that a rerun whose
    models are all cached reads no audio.
    """

    def __init__(self, wav_scp: Path, options: SampleOptions) -> None:
        self.wav_scp = Path(wav_scp)
        self.options = options
        self.reader = AudioReader(self.wav_scp)
        self._plans: Dict[tuple, List[np.ndarray]] = {}

    @functools.cached_property
    def items(self) -> List[AudioItem]:
        return sample_utterances(self.wav_scp, self.options.max_utts, self.options.seed)

    @functools.cached_property
    def samples(self) -> List[int]:
        return [self.reader.num_samples(it) for it in self.items]

    def plan(self, strides) -> List[np.ndarray]:
        from espnet_delta.ssl.upstream import conv_output_lengths

        key = tuple(strides)
        if key not in self._plans:
            frames = conv_output_lengths(torch.tensor(self.samples), list(strides)).clamp(min=1)
            self._plans[key] = frame_plan(frames.tolist(), self.options.max_frames, self.options.seed)
        return self._plans[key]

    def batches(self):
        return make_batches(self.items, self.samples, self.options.batch_samples, self.options.batch_size)

    def collect(self, upstream, progress=None) -> List[np.ndarray]:
        """``[frames, D]`` float32 per hidden state, frames in utterance-id order."""
        from espnet_delta.ssl.embeddings import select_hidden_state
        from espnet_delta.ssl.upstream import FrozenUpstream, conv_strides

        frozen = FrozenUpstream(upstream).to(self.options.device)
        plan = self.plan(conv_strides(frozen.upstream.upstream.model))
        index = {it.utt: k for k, it in enumerate(self.items)}
        per_utt: Dict[int, List[np.ndarray]] = {}
        for batch in self.batches():
            wavs = [torch.from_numpy(self.reader.read(it)) for it, _ in batch]
            lengths = torch.tensor([len(w) for w in wavs])
            padded = torch.nn.utils.rnn.pad_sequence(wavs, batch_first=True).to(self.options.device)
            states, frames = frozen(padded, lengths.to(self.options.device))
            states = [select_hidden_state(states, i, self.options.hidden_norm) for i in range(len(states))]
            for b, (item, _) in enumerate(batch):
                k = index[item.utt]
                keep = plan[k]
                if keep.size and int(keep[-1]) >= int(frames[b]):
                    raise RuntimeError(f"{self.wav_scp}: {item.utt}: planned frame {int(keep[-1])} but the "
                                       f"model produced {int(frames[b])} frames")
                sel = torch.from_numpy(keep).to(states[0].device)
                per_utt[k] = [s[b].index_select(0, sel).float().cpu().numpy() for s in states]
            if progress is not None:
                progress.update(1)
        n_states = len(next(iter(per_utt.values())))
        return [np.concatenate([per_utt[k][i] for k in sorted(per_utt)]) for i in range(n_states)]


def layer_rows(model: str, pt_states: List[np.ndarray], ft_states: List[np.ndarray], keep_variance: float,
               progress=None) -> List[dict]:
    """The CSV rows of one model: per state, both comparisons and both measures."""
    if len(pt_states) != len(ft_states):
        raise RuntimeError(f"{model}: {len(pt_states)} pre-trained vs {len(ft_states)} fine-tuned hidden states")
    rows = []
    for layer, (pt, ft) in enumerate(zip(pt_states, ft_states)):
        r_pt = reduce_svd(pt, f"{model} layer {layer} pre-trained", keep_variance)
        r_ft = reduce_svd(ft, f"{model} layer {layer} fine-tuned", keep_variance)
        results = {"pt_vs_ft": cca_reduced(r_pt, r_ft)}
        delta = ft.astype(np.float64) - pt.astype(np.float64)
        if not np.any(delta):
            logging.info("%s layer %d: fine-tuned equals pre-trained (delta = 0); ft_vs_delta is NaN", model, layer)
            results["ft_vs_delta"] = None
        else:
            results["ft_vs_delta"] = cca_reduced(r_ft, reduce_svd(delta, f"{model} layer {layer} delta", keep_variance))
        for comparison in COMPARISONS:
            res = results[comparison]
            for measure in MEASURES:
                value = math.nan if res is None else getattr(res, measure)
                rows.append({"model": model, "layer": layer, "measure": measure, "comparison": comparison,
                             "value": value})
        if progress is not None:
            progress.update(1)
    return rows


def analyse_model(model: AnalysisModel, sampler: HiddenStateSampler, cache: Path) -> List[dict]:
    """Rows of one model, from ``cache`` when its inputs are unchanged."""
    inputs = {
        "model": dataclasses.asdict(model),
        "pretrained": file_fingerprint(model.path_or_url),
        "finetuned": file_fingerprint(model.finetuned),
        "wav_scp": file_fingerprint(sampler.wav_scp),
        "options": sampler.options.fingerprint(),
    }
    cached = load_cache(cache, inputs)
    if cached is not None:
        logging.info("%s: layer-wise similarities up to date (%s)", model.name, cache)
        return cached["rows"]
    from tqdm import tqdm

    from espnet_delta.ssl.upstream import load_upstream

    pt = load_upstream(model.upstream, model.path_or_url)
    ft = load_upstream(model.upstream, model.path_or_url, finetuned=model.finetuned)
    n_batches = len(sampler.batches())
    with tqdm(total=2 * n_batches + pt.num_layers, desc=f"analysis {model.name}", unit="step") as bar:
        pt_states = sampler.collect(pt, bar)
        ft_states = sampler.collect(ft, bar)
        rows = layer_rows(model.name, pt_states, ft_states, sampler.options.keep_variance, bar)
    n_frames = int(pt_states[0].shape[0])
    save_cache(cache, inputs, {"rows": rows, "frames": n_frames, "utterances": len(sampler.items)})
    logging.info("%s: %d hidden states on %d frames of %d utterances", model.name, len(pt_states), n_frames,
                 len(sampler.items))
    return rows


def format_csv(rows: Sequence[dict]) -> str:
    lines = [",".join(CSV_HEADER)]
    for r in rows:
        value = "nan" if math.isnan(r["value"]) else f"{r['value']:.6f}"
        lines.append(f"{r['model']},{r['layer']},{r['measure']},{r['comparison']},{value}")
    return "\n".join(lines) + "\n"


def curves(rows: Sequence[dict], comparison: str) -> Dict[str, Dict[str, list]]:
    """``measure -> model -> [(layer, value)]`` of one comparison, for the figures."""
    out: Dict[str, Dict[str, list]] = {}
    for r in rows:
        if r["comparison"] == comparison:
            out.setdefault(r["measure"], {}).setdefault(r["model"], []).append((r["layer"], r["value"]))
    return out
