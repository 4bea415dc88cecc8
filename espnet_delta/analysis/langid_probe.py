"""Linear language-ID probe on every layer of a frozen SSL upstream (SSHR's diagnostic).

SSHR (arXiv 2309.16937) takes its language frame from the layer where language
identity is most linearly decodable. This probe measures that per hidden state:
each utterance becomes one vector per layer (the mean of that layer's valid frames),
a multinomial logistic regression (standardised features, L2) is fit on the training
utterances and its accuracy is measured on held-out utterances of other speakers.
Hidden state 0 is the transformer's input (CNN + positional convolution), state i the
output of layer i, the last one after the final LayerNorm (S3PRL's convention).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from espnet_delta.data.audio import read_audio
from espnet_delta.fileio import read_table, write_text_atomic

logger = logging.getLogger(__name__)


def read_labelled_audio(data_dir: Path, max_utts: int = 0) -> List[Tuple[str, str, str]]:
    """``(utt, wav path, language)`` of a Kaldi dir with ``utt2lang``; every utterance or the first ``max_utts``."""
    data_dir = Path(data_dir)
    langs = {row.key: row.value for row in read_table(data_dir / "utt2lang", what="utt2lang")}
    rows = []
    for row in read_table(data_dir / "wav.scp", what="wav.scp"):
        if row.key not in langs:
            raise KeyError(f"{data_dir / 'utt2lang'}: no language for utterance {row.key!r}")
        rows.append((row.key, row.value, langs[row.key]))
    return rows[:max_utts] if max_utts > 0 else rows


@torch.no_grad()
def pooled_hidden_states(upstream, items: Sequence[Tuple[str, str, str]]) -> np.ndarray:
    """(utterances, hidden states, D): each hidden state's mean over the utterance's valid frames.

    ``upstream`` is a :class:`espnet_delta.ssl.upstream.FrozenUpstream`; utterances run
    one at a time, so no padding enters a mean.
    """
    pooled = []
    for utt, path, _ in items:
        audio, rate = read_audio(path)
        if rate != 16000:
            raise ValueError(f"{path} ({utt}): {rate} Hz; the probe takes 16 kHz audio")
        wav = torch.from_numpy(np.asarray(audio, dtype=np.float32))[None]
        states, frames = upstream(wav, torch.tensor([wav.size(1)]))
        n = int(frames[0])
        pooled.append(torch.stack([s[0, :n].mean(0) for s in states]).numpy())
    return np.stack(pooled)


def probe_accuracy(
    train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray, test_y: Sequence[str], seed: int = 0
) -> List[float]:
    """Held-out accuracy of a linear classifier per hidden state; ``*_x`` is (N, layers, D)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(train_y)) < 2:
        raise ValueError(f"the probe needs at least two languages in training, got {sorted(set(train_y))}")
    accuracies = []
    for layer in range(train_x.shape[1]):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
        clf.fit(train_x[:, layer], list(train_y))
        accuracies.append(float(np.mean(clf.predict(test_x[:, layer]) == np.asarray(test_y))))
    return accuracies


def chance_accuracy(train_y: Sequence[str], test_y: Sequence[str]) -> float:
    """Accuracy of always answering the most frequent training language."""
    values, counts = np.unique(np.asarray(train_y), return_counts=True)
    return float(np.mean(np.asarray(test_y) == values[int(np.argmax(counts))]))


def write_probe_outputs(out_dir: Path, model: str, accuracies: Sequence[float], chance: float,
                        n_train: int, n_test: int, link_base: Path = Path(".")) -> Dict[str, Path]:
    """``langid_probe.csv``, ``langid_probe.png`` and ``langid_probe.md`` (a RESULTS.md section
    whose image link is relative to ``link_base``, where RESULTS.md lives)."""
    from matplotlib.figure import Figure

    from espnet_delta.analysis.outputs import save_figure

    out_dir = Path(out_dir)
    csv = out_dir / "langid_probe.csv"
    write_text_atomic(csv, "model,layer,accuracy,chance,n_train,n_test\n" + "".join(
        f"{model},{i},{a:.4f},{chance:.4f},{n_train},{n_test}\n" for i, a in enumerate(accuracies)))
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    ax.plot(range(len(accuracies)), accuracies, marker="o", label=model)
    ax.axhline(chance, color="grey", linestyle="--", label="chance")
    ax.set_xlabel("hidden state (0 = transformer input, i = layer i)")
    ax.set_ylabel("language-ID accuracy")
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title(f"linear language-ID probe, frozen {model}")
    png = save_figure(fig, out_dir / "langid_probe.png")
    best = int(np.argmax(accuracies))
    md = out_dir / "langid_probe.md"
    write_text_atomic(md, "\n".join([
        "## Language-ID probe (frozen pre-trained upstream)",
        "",
        f"Linear probe (logistic regression on utterance-mean hidden states) of the frozen `{model}`, "
        f"trained on {n_train} utterances, accuracy on {n_test} utterances of other speakers; "
        f"chance (majority language) {100 * chance:.1f} %. Best: hidden state {best}.",
        "",
        "|hidden state|" + "|".join(str(i) for i in range(len(accuracies))) + "|",
        "|---|" + "---|" * len(accuracies),
        "|accuracy (%)|" + "|".join(f"{100 * a:.1f}" for a in accuracies) + "|",
        "",
        f"![language-ID probe]({Path(os.path.relpath(png, link_base)).as_posix()})",
        "",
    ]))
    return {"csv": csv, "png": png, "md": md}
