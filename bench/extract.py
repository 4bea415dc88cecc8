"""Benchmark: the feature-extraction stage against the bare forwards it has to run.

Three upstreams per utterance, as in a delta-fusion extraction with one other model:
WavLM fine-tuned (the reference), HuBERT pre-trained and HuBERT fine-tuned. The
models are randomly initialised *base-size* architectures (12 layers, 768 dims, 12
heads, 3072 FFN, 512-channel seven-layer CNN; ~95M parameters each; no model hub
here). The "fine-tuned" checkpoints are the pre-trained ones plus seeded noise on the
transformer only, i.e. fine-tuned with a frozen CNN as in the paper's recipe, so the
HuBERT pair shares its CNN feature encoder bit for bit.

Measured on the same batches (the extraction's own longest-first batching):

* bare sum: each of the three upstreams' forward (S3PRL, all hidden states) timed on
  its own, one model at a time, CNNs not shared -- the work an extraction cannot avoid
  without sharing;
* extraction: the full :func:`extract_features` call (audio reading, forwards with the
  shared CNN, alignment, deltas, float16 conversion, ark/scp writing, merging), models
  loaded beforehand.

Prints audio seconds per wall second and the ratio extraction / bare sum. FLOPs are
counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions,
2 per multiply-add; elementwise ops, norms and softmax not counted) on the first
(longest) batch of the extraction's forwards and scaled by audio seconds; on a GPU the
achieved FLOP/s is compared with the device's dense bf16 tensor-core peak (H100/H200
SXM 989 TFLOP/s, H100 PCIe 756, A100 312; the spec-sheet numbers without sparsity).

    .venv/bin/python bench/extract.py [--seconds 40] [--device cpu] [--autocast none|bf16|fp16]
        [--fp16 true] [--unshared]

``--unshared`` also times an extraction without CNN sharing (one more pass).
Each time is the minimum over ``--repeats`` alternating rounds (other processes on a
shared machine slow a round, never speed it up). Numbers are from one run.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

from espnet_delta.cli import str2bool
from espnet_delta.data.wav_scp import AudioReader, read_wav_scp
from espnet_delta.features.audio import make_batches, padded_batch
from espnet_delta.features.config import ExtractionConfig
from espnet_delta.features.extract import extract_features
from espnet_delta.fileio import torch_save_atomic
from espnet_delta.ssl.tiny import TinyConfig, build_checkpoint, weights_of

BASE = TinyConfig(num_layers=12, embed_dim=768, ffn_dim=3072, num_heads=12, conv_channels=512, conv_pos=128,
                  conv_pos_groups=16)
#: dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name()
BF16_PEAKS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L40S", 362e12))
BATCH_SECONDS, BATCH_SIZE = 60.0, 8


def make_models(workdir: Path) -> dict:
    """{reference, others} specs: WavLM (fine-tuned) and HuBERT (pre-trained, fine-tuned)."""
    specs = {}
    for k, arch in enumerate(("wavlm", "hubert")):
        ckpt = build_checkpoint(arch, BASE, seed=k)
        torch_save_atomic(ckpt, workdir / f"{arch}.pt")
        gen = torch.Generator().manual_seed(100 + k)
        weights = weights_of(ckpt)
        for key, value in weights.items():
            if key.startswith("encoder.") and value.is_floating_point():  # the CNN stays frozen
                weights[key] = value + 0.01 * torch.randn(value.shape, generator=gen)
        torch_save_atomic(ckpt, workdir / f"{arch}_ft.pt")
        specs[arch] = {"upstream": f"{arch}_local", "path_or_url": str(workdir / f"{arch}.pt"),
                       "finetuned": str(workdir / f"{arch}_ft.pt")}
    return {"reference": specs["wavlm"], "others": [specs["hubert"]]}


def make_data(workdir: Path, seconds: float) -> Path:
    """Utterances of 2-8 s (noise plus two tones) totalling ``seconds``."""
    data = workdir / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    lines, total, i = [], 0.0, 0
    while total < seconds:
        n = int(16000 * min(rng.uniform(2.0, 8.0), seconds - total + 0.5))
        t = np.arange(n) / 16000
        f1, f2 = rng.uniform(100, 400), rng.uniform(800, 3000)
        wav = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * f1 * t) + 0.1 * np.sin(2 * np.pi * f2 * t)
        path = workdir / f"utt{i:04d}.wav"
        soundfile.write(path, wav.astype(np.float32), 16000)
        lines.append(f"utt{i:04d} {path}\n")
        total += n / 16000
        i += 1
    (data / "wav.scp").write_text("".join(lines))
    return data


def bare_forwards(upstreams, batches, device) -> float:
    """Seconds for each upstream's own forward over every batch, summed (audio preloaded)."""
    total = 0.0
    for up in upstreams:
        for wavs, lens in batches:
            wavs, lens = wavs.to(device), lens.to(device)
            sync(device)
            start = time.perf_counter()
            with torch.no_grad():
                up(wavs, lens)
            sync(device)
            total += time.perf_counter() - start
    return total


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def count_flops(extractor, wavs, lens) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        extractor.streams(wavs, lens)
    return float(counter.get_total_flops())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=24.0, help="audio to extract")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--autocast", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--fp16", type=str2bool, default=True, help="float16 storage, as the paper-scale recipe")
    p.add_argument("--unshared", action="store_true", help="also time an extraction without CNN sharing")
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds of (bare forwards, extraction); minimum times and the median per-round ratio are kept")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        conf = ExtractionConfig.from_dict(make_models(workdir))
        data = make_data(workdir, args.seconds)
        shared = conf.build_extractor(autocast=args.autocast).to(device)
        plain = conf.build_extractor(autocast=args.autocast, share_cnn=False).to(device)
        items = read_wav_scp(data / "wav.scp")
        audio = AudioReader(data / "wav.scp")
        lengths = [audio.num_samples(it) for it in items]
        audio_seconds = sum(lengths) / 16000
        batches = [padded_batch(audio, b) for b in make_batches(items, lengths, int(BATCH_SECONDS * 16000), BATCH_SIZE)]
        params = sum(p.numel() for p in shared.reference_ft.upstream.parameters())
        print(f"models: base ({params / 1e6:.1f}M parameters each): WavLM ft + HuBERT pt + HuBERT ft; "
              f"CNN groups {shared.cnn_groups}; {len(items)} utterances, {audio_seconds:.1f} s of audio, "
              f"{len(batches)} batches; device {device}, {torch.get_num_threads()} threads, autocast {args.autocast}")

        # warm-up: first-call allocations and kernel selection, one short batch each
        w, n = batches[-1]
        shared.streams(w.to(device), n.to(device))
        plain.streams(w.to(device), n.to(device))

        bare, runs, ratios = float("inf"), {}, {}
        for r in range(args.repeats):  # alternating, so that load from other processes hits both alike
            this_bare = bare_forwards(plain._upstreams(), batches, device)
            bare = min(bare, this_bare)
            for name, ext in [("shared CNN", shared)] + ([("unshared", plain)] if args.unshared else []):
                out = workdir / f"feats_{name.split()[0]}_{r}"
                sync(device)
                start = time.perf_counter()
                extract_features(conf, data, out, fp16=args.fp16, autocast=args.autocast, device=str(device),
                                 progress=False, extractor=ext, batch_seconds=BATCH_SECONDS, batch_size=BATCH_SIZE)
                sync(device)
                secs = time.perf_counter() - start
                runs[name] = min(runs.get(name, float("inf")), secs)
                ratios.setdefault(name, []).append(secs / this_bare)
                print(f"round {r + 1}: bare sum {this_bare:7.2f} s, extraction ({name}) {secs:7.2f} s, "
                      f"ratio {secs / this_bare:.3f}", flush=True)
        w, n = batches[0]
        flops = count_flops(shared, w.to(device), n.to(device)) / (float(n.sum()) / 16000) * audio_seconds

    print(f"bare sum of the 3 forwards:      {bare:8.2f} s  ({audio_seconds / bare:.2f} audio s per wall s)")
    for name, secs in runs.items():
        print(f"extraction ({name:10s}):        {secs:8.2f} s  ({audio_seconds / secs:.2f} audio s per wall s)  "
              f"ratio to bare sum {secs / bare:.3f} (of the minima); median per-round ratio "
              f"{float(np.median(ratios[name])):.3f}")
    best = runs["shared CNN"]
    print(f"FLOPs (FlopCounterMode, matmul+conv, shared CNN): {flops / audio_seconds / 1e9:.1f} GFLOP per audio s; "
          f"achieved {flops / best / 1e12:.3f} TFLOP/s")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in BF16_PEAKS if k in name), None)
        if peak is None:
            print(f"{name}: no bf16 peak on record; fraction of peak not computed")
        else:
            print(f"{name}: dense bf16 peak {peak / 1e12:.0f} TFLOP/s; fraction achieved {flops / best / peak:.1%}")


if __name__ == "__main__":
    main()
