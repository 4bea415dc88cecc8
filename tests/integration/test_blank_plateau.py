"""Issue 25 part 1: a fusion head that falls onto the blank-free CTC optimum from ESPnet's default
CTC init leaves it with ``model_conf.ctc_blank_prior: 0.5`` (conf/fusion.yaml).

The mini run's plateau (notes: dhubert_moe seed 0, dw2v2_concat seed 2) takes an 11-minute recipe;
this reproduces its mechanism in ~1-2 s per training on synthetic "cached features" with the
project's training path: a ``CachedFusionFrontend`` (concat of the reference E_ft and one E_delta,
LayerNorm, Dropout 0.1), ESPnet's ``CTC`` under ``CTCWERModel.forward`` (summed per-utterance CTC
loss), AdamW lr 2e-3 wd 0.01, ESPnet's ``PiecewiseLinearWarmupLR`` (10 % warm-up, linear decay to
0), grad clip 1.0, as conf/fusion.yaml. A plain torch loop replaces ESPnet's trainer (importing
the ASR task alone takes ~13 s); 128 utterances in sorted batches of 16 (batch_type sorted,
batch_size 16), 20 epochs: 160 steps, 16 of them warm-up (the mini run: 520 and 52).

Synthetic corpus (a stand-in for CTC-fine-tuned SSL features, T/U = 4 as in the mini data):
each character spans 2-6 frames; its middle frame carries the character's prototype strongly
(amplitude 4, the fine-tuned model's CTC spike), the other frames weakly (amplitude 1.2), 15 % of
those the neighbouring character's instead (coarticulation); Gaussian noise (sd 2) on every frame.
No feature direction is shared by the non-spike frames, so the new blank gains them mainly
through its bias (about one learning rate per Adam step) while each character's 128 weights learn
from all its frames. Traced on seed 1 from P(blank) = 1/V: the greedy blank share of the training
frames peaks at 0.11 at step 20, just after the warm-up (the mini run's dhubert_moe seed 0: 0.145
at step 53), then falls to 0.014 at step 60 and 0.004 at step 160 as the characters take every
frame; the blank bias's gradient fades from -18 to about 0 (-1.0 .. +0.1 over the last 100
steps): the head sits on the blank-free optimum, train loss twice an escaped head's. With
P(blank) = 0.5 at the start the blank owns every frame first (share 1.0 to step 24), the spikes
become characters, and the head ends peaky: about one character frame per character, a blank
share towards 1 - U/T = 0.75 (0.66 here, as 0.61-0.62 in the mini run).

Seeds: with this corpus (data seed 1000) every tried training seed falls without the prior (dev
blank share 0.014 0.004 0.133 0.145 for seeds 0-3, train loss 21-22, CER 0.32-0.34) and escapes with
it (0.645-0.660, loss 10.3-10.7, CER 0.17-0.23); so do seeds 0-3 on data seed 1001 (0.10-0.13
against 0.66). The main test takes seed 1, the clearest fall; the second test runs the prior on
seeds 0 and 2, where the default init also fell.
"""

from __future__ import annotations

import random
from typing import List, Tuple

import pytest
import torch

LETTERS = list("ETHSIOARNLWCGMDUKBYPVF'")
TOKENS = ["<blank>", "<unk>", "<space>", *LETTERS, "<sos/eos>"]
V = len(TOKENS)
SPACE = 2
D = 64  # per stream, as the mini upstreams
SPIKE, LEAK, SWAP, NOISE = 4.0, 1.2, 0.15, 2.0
N_TRAIN, N_DEV, BATCH, EPOCHS = 128, 32, 16, 20  # 160 steps, 16 of them warm-up
LR = 2e-3

Utterance = Tuple[torch.Tensor, torch.Tensor]


def utterance(g: torch.Generator, proto: torch.Tensor) -> Utterance:
    """(T, 3D) features (wavlm.ft | hubert.delta | hubert.ft) and the character ids."""
    def randint(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=g))

    freq = torch.linspace(2.0, 0.5, len(LETTERS))  # a few frequent letters, like English
    ids: List[int] = []
    for _ in range(randint(3, 5)):
        if ids:
            ids.append(SPACE)
        ids += [3 + int(i) for i in torch.multinomial(freq, randint(2, 6), replacement=True, generator=g)]
    frames = []  # (token whose prototype the frame carries, amplitude)
    for k, c in enumerate(ids):
        length = randint(2, 6)
        for j in range(length):
            if j == length // 2:
                frames.append((c, SPIKE))
                continue
            neighbour = k - 1 if j < length // 2 else k + 1
            swap = float(torch.rand(1, generator=g)) < SWAP and 0 <= neighbour < len(ids)
            frames.append((ids[neighbour] if swap else c, LEAK))
    src = [t for t, _ in frames]
    src_t, amp_t = torch.tensor(src), torch.tensor([a for _, a in frames])[:, None]
    streams = [amp_t * proto[s, src_t] + NOISE * torch.randn(len(src), D, generator=g) for s in (0, 1)]
    streams.append(torch.randn(len(src), D, generator=g))  # hubert.ft: not read in delta mode
    return torch.cat(streams, dim=1), torch.tensor(ids)


def corpus(seed: int = 1000) -> Tuple[List[Utterance], List[Utterance]]:
    g = torch.Generator().manual_seed(seed)
    proto = torch.randn(2, V, D, generator=g)
    return [utterance(g, proto) for _ in range(N_TRAIN)], [utterance(g, proto) for _ in range(N_DEV)]


def collate(items: List[Utterance]):
    lengths = torch.tensor([len(x) for x, _ in items])
    text_lengths = torch.tensor([len(y) for _, y in items])
    x = torch.zeros(len(items), int(lengths.max()), 3 * D)
    y = torch.full((len(items), int(text_lengths.max())), -1, dtype=torch.long)
    for b, (xb, yb) in enumerate(items):
        x[b, : len(xb)] = xb
        y[b, : len(yb)] = yb
    return x, lengths, y, text_lengths


def build_model(prior):
    from espnet2.asr.ctc import CTC

    from espnet_delta.asr.ctc_wer_model import CTCWERModel
    from espnet_delta.asr.encoder.identity import IdentityEncoder
    from espnet_delta.asr.frontend.cached_fusion import CachedFusionFrontend
    from espnet_delta.features.layout import LAYOUT_FORMAT

    layout = {"format": LAYOUT_FORMAT, "mode": "delta",
              "streams": [{"name": "wavlm.ft", "dim": D}, {"name": "hubert.delta", "dim": D},
                          {"name": "hubert.ft", "dim": D}]}
    front = CachedFusionFrontend(layout=layout, deltas=["hubert"], mode="delta", fusion="concat",
                                 head_norm=True, head_dropout=0.1)
    size = front.output_size()
    return CTCWERModel(
        vocab_size=V, token_list=TOKENS, frontend=front, specaug=None, normalize=None, preencoder=None,
        encoder=IdentityEncoder(size), postencoder=None, decoder=None, ctc=CTC(odim=V, encoder_output_size=size),
        joint_network=None, ctc_weight=1.0, extract_feats_in_collect_stats=False, ctc_blank_prior=prior,
    )


def edit_distance(ref: List[int], hyp: List[int]) -> int:
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diag, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (ref[i - 1] != hyp[j - 1]))
    return row[-1]


def greedy_scores(model, data: List[Utterance]) -> Tuple[float, float]:
    """(share of frames whose greedy CTC label is the blank, CER of the collapsed greedy output)."""
    model.eval()
    x, lengths, y, text_lengths = collate(data)
    with torch.no_grad():
        encoded, _ = model.encode(x, lengths)
        best = model.ctc.argmax(encoded)
    blank = frames = errors = chars = 0
    for b in range(len(data)):
        path = best[b, : int(lengths[b])].tolist()
        blank += path.count(0)
        frames += len(path)
        hyp = [t for k, t in enumerate(path) if t != 0 and (k == 0 or t != path[k - 1])]
        ref = y[b, : int(text_lengths[b])].tolist()
        errors += edit_distance(ref, hyp)
        chars += len(ref)
    model.train()
    return blank / frames, errors / chars


def train_head(data, seed: int, prior):
    """Train one head as stage 7 does (module docstring); (last epoch's mean train loss, blank share, CER)."""
    from espnet2.schedulers.piecewise_linear_warmup_lr import PiecewiseLinearWarmupLR

    train, dev = data
    torch.manual_seed(seed)
    random.seed(seed)
    model = build_model(prior)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    steps_per_epoch = N_TRAIN // BATCH
    total = steps_per_epoch * EPOCHS
    warmup = round(0.1 * total)
    scheduler = PiecewiseLinearWarmupLR(optimizer, warmup_steps_list=[0, warmup, total],
                                        warmup_lr_list=[0.0, LR, 0.0])
    order = sorted(range(N_TRAIN), key=lambda i: -len(train[i][0]))  # batch_type: sorted
    batches = [collate([train[i] for i in order[k: k + BATCH]]) for k in range(0, N_TRAIN, BATCH)]
    shuffle = torch.Generator().manual_seed(seed)
    for _ in range(EPOCHS):
        epoch_loss = 0.0
        for i in torch.randperm(len(batches), generator=shuffle).tolist():
            loss, _, _ = model(*batches[i])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            epoch_loss += float(loss.detach())
    return (epoch_loss / len(batches), *greedy_scores(model, dev))


@pytest.fixture(scope="module")
def data():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 10x faster for these tiny batches on a shared 2-core machine
    yield corpus()
    torch.set_num_threads(threads)


def frames_per_char(data) -> float:
    train, _ = data
    return sum(len(x) for x, _ in train) / sum(len(y) for _, y in train)


def test_default_init_falls_onto_the_blank_free_optimum_and_the_prior_leaves_it(data):
    # an escaped (peaky) head emits each character on about one frame: blank share 1 - U/T
    escaped = 1.0 - 1.0 / frames_per_char(data)
    assert 0.7 < escaped < 0.8  # the corpus has T/U ~ 4 like the mini data
    loss_default, blank_default, cer_default = train_head(data, seed=1, prior=None)
    loss_prior, blank_prior, cer_prior = train_head(data, seed=1, prior=0.5)
    # default (ESPnet's P(blank) = 1/V start): almost every frame carries a character
    assert blank_default < 0.25 * escaped, (loss_default, blank_default, cer_default)
    # with the prior the head is peaky, its loss about half and its CER clearly lower
    assert blank_prior > 0.5 * escaped, (loss_prior, blank_prior, cer_prior)
    assert loss_prior < 0.65 * loss_default, (loss_prior, loss_default)
    assert cer_prior < 0.8 * cer_default, (cer_prior, cer_default)


@pytest.mark.parametrize("seed", [0, 2])
def test_the_prior_escapes_on_other_seeds(data, seed):
    escaped = 1.0 - 1.0 / frames_per_char(data)
    loss, blank, cer = train_head(data, seed=seed, prior=0.5)
    assert blank > 0.5 * escaped, (seed, loss, blank, cer)
