"""Benchmark: one epoch of fusion-head training on cached features vs the on-the-fly frontend.

Same fusion (concat, WavLM reference + delta HuBERT), same head (LayerNorm, Dropout,
linear CTC), same AdamW step, same batches; only the source of the features
differs:

* on the fly: :class:`DeltaFusionFrontend` runs WavLM (fine-tuned), HuBERT
  (pre-trained and fine-tuned) on every batch, as a frontend inside training would;
* cached: the same streams were extracted once (stage 6) into a kaldiio ark and are
  read back per batch.

The models are randomly initialised *base-size* architectures (12 layers, 768 dims,
12 heads, 3072 FFN, 512-channel CNN: ~95M parameters each), built locally because
there is no model hub here; timing does not depend on the weights' values. The
"fine-tuned" checkpoints are the pre-trained ones plus seeded noise. Extraction time
is reported separately: it is paid once, the training epochs many times.

    .venv/bin/python bench/fusion_cached_vs_onthefly.py [--utts 16] [--seconds 4] [--size base|tiny]

Prints the per-epoch times and their ratio. Numbers are from one run on this machine.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from espnet_delta.fileio import torch_save_atomic
from espnet_delta.ssl.tiny import TinyConfig, build_checkpoint, weights_of

SIZES = {
    "base": TinyConfig(num_layers=12, embed_dim=768, ffn_dim=3072, num_heads=12, conv_channels=512, conv_pos=128, conv_pos_groups=16),
    "tiny": TinyConfig(),
}


def make_models(workdir: Path, config: TinyConfig):
    specs = {}
    for k, arch in enumerate(("wavlm", "hubert")):
        ckpt = build_checkpoint(arch, config, seed=k)
        pt = workdir / f"{arch}.pt"
        torch_save_atomic(ckpt, pt)
        gen = torch.Generator().manual_seed(100 + k)
        weights = weights_of(ckpt)
        for key, value in weights.items():
            if key.startswith("encoder.") and value.is_floating_point():
                weights[key] = value + 0.01 * torch.randn(value.shape, generator=gen)
        ft = workdir / f"{arch}_ft.pt"
        torch_save_atomic(ckpt, ft)
        specs[arch] = {"upstream": f"{arch}_local", "path_or_url": str(pt), "finetuned": str(ft)}
    return specs


def batches(utts: int, seconds: float, batch_size: int):
    gen = torch.Generator().manual_seed(0)
    out = []
    for start in range(0, utts, batch_size):
        n = min(batch_size, utts - start)
        lengths = torch.tensor([int(16000 * seconds * (0.75 + 0.25 * ((start + i) % 4) / 3)) for i in range(n)])
        wavs = 0.1 * torch.randn(n, int(lengths.max()), generator=gen)
        for i in range(n):
            wavs[i, lengths[i]:] = 0
        out.append((wavs, lengths))
    return out


def train_step(head, ctc, optim, ref, others, lengths):
    z = head(ref, others, lengths)
    logp = ctc(z).log_softmax(-1).transpose(0, 1)
    targets = torch.randint(1, ctc.out_features, (z.size(0), 20))
    loss = torch.nn.functional.ctc_loss(logp, targets, lengths, torch.full((z.size(0),), 20), zero_infinity=True)
    optim.zero_grad()
    loss.backward()
    optim.step()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="base")
    p.add_argument("--utts", type=int, default=16)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import kaldiio

    from espnet_delta.asr.frontend.delta_fusion import DeltaFusionFrontend

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        specs = make_models(workdir, SIZES[args.size])
        frontend = DeltaFusionFrontend(reference=specs["wavlm"], deltas=[specs["hubert"]], fusion="concat").to(device)
        extractor, head = frontend.extractor, frontend.head
        ctc = torch.nn.Linear(head.output_size(), 32).to(device)
        optim = torch.optim.AdamW([*head.parameters(), *ctc.parameters()], lr=1e-4, weight_decay=0.01)
        data = batches(args.utts, args.seconds, args.batch_size)
        audio_seconds = sum(float(l.sum()) for _, l in data) / 16000
        params = sum(p.numel() for p in extractor.reference_ft.upstream.parameters())
        print(f"models: {args.size} ({params / 1e6:.1f}M parameters each; WavLM ft + HuBERT pt + ft), "
              f"{args.utts} utterances, {audio_seconds:.0f} s of audio, batch {args.batch_size}, device {device}")

        # warm-up (first-call allocations) on one batch
        w, l = data[0]
        train_step(head, ctc, optim, *frontend.extractor(w.to(device), l.to(device)))

        start = time.perf_counter()
        for wavs, lengths in data:
            ref, others, lens = extractor(wavs.to(device), lengths.to(device))
            train_step(head, ctc, optim, ref, others, lens)
        on_the_fly = time.perf_counter() - start

        # extraction, once: store the streams of every utterance in a kaldiio ark
        start = time.perf_counter()
        ark, scp = workdir / "feats.ark", workdir / "feats.scp"
        keys = []
        with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as writer:
            for b, (wavs, lengths) in enumerate(data):
                streams, lens = extractor.streams(wavs.to(device), lengths.to(device))
                matrix = torch.cat(streams, dim=-1).cpu()
                for i in range(matrix.size(0)):
                    key = f"utt{b:03d}_{i}"
                    writer(key, matrix[i, : int(lens[i])].numpy())
                    keys.append(key)
        extraction = time.perf_counter() - start
        dims = [s.size(-1) for s in streams]
        table = kaldiio.load_scp(str(scp))

        start = time.perf_counter()
        for b in range(len(data)):
            mats = [torch.tensor(table[k]) for k in keys if k.startswith(f"utt{b:03d}_")]
            lens = torch.tensor([m.size(0) for m in mats])
            x = torch.nn.utils.rnn.pad_sequence(mats, batch_first=True).to(device)
            ref, delta, ft = torch.split(x, dims, dim=-1)
            train_step(head, ctc, optim, ref, [delta], lens.to(device))
        cached = time.perf_counter() - start

    print(f"on-the-fly frontend: {on_the_fly:8.3f} s/epoch")
    print(f"cached features:     {cached:8.3f} s/epoch")
    print(f"one-off extraction:  {extraction:8.3f} s")
    print(f"ratio (on-the-fly / cached): {on_the_fly / cached:.1f}x")


if __name__ == "__main__":
    main()
