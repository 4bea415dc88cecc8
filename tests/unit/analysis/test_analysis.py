"""The analysis stage: layer-wise CSV and figures, gate statistics, WER chart; reruns do no work."""

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from conftest import perturb_all, write_espnet_checkpoint
from espnet_delta.analysis.gates import utterance_gate_means
from espnet_delta.analysis.layerwise import frame_plan
from espnet_delta.bin.analyze import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_STATES = 4  # the conftest's tiny upstreams have 3 transformer layers: states 0..3


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > len(PNG_SIGNATURE) and data[:8] == PNG_SIGNATURE, path


def write_wavs(root: Path, n: int = 6, seconds: float = 2.0) -> Path:
    """Noise plus a few tones: enough frames for CCA on 32-dim states (no TTS needed)."""
    gen = np.random.default_rng(0)
    lines = []
    for k in range(n):
        t = np.arange(int(16000 * (seconds - 0.1 * k))) / 16000
        wav = 0.05 * gen.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (200 + 50 * k) * t)
        path = root / f"utt{k}.wav"
        soundfile.write(path, wav.astype(np.float32), 16000)
        lines.append(f"utt{k} {path}\n")
    scp = root / "wav.scp"
    scp.write_text("".join(lines))
    return scp


@pytest.fixture
def recipe(tmp_path, tiny_upstreams):
    """conf/upstreams.yaml with two models; wavlm fine-tuned (perturbed), hubert 'fine-tuned' = pre-trained."""
    conf = {a: {"upstream": f"{a}_local", "path_or_url": str(tiny_upstreams[a])} for a in ("wavlm", "hubert")}
    (tmp_path / "upstreams.yaml").write_text(yaml.safe_dump(conf))
    for arch, change in (("wavlm", perturb_all(scale=0.2, seed=1)), ("hubert", None)):
        (tmp_path / "exp" / f"ft_{arch}").mkdir(parents=True)
        write_espnet_checkpoint(tiny_upstreams[arch], tmp_path / "exp" / f"ft_{arch}" / "model.pth", change)
    (tmp_path / "wavs").mkdir()
    return tmp_path, write_wavs(tmp_path / "wavs")


def layerwise_cmd(root: Path, wav_scp: Path):
    return ["--out_dir", str(root / "analysis"), "--upstream_conf", str(root / "upstreams.yaml"),
            "--finetuned", str(root / "exp" / "ft_{name}" / "model.pth"), "--wav_scp", str(wav_scp),
            "--max_utts", "5", "--max_frames", "400", "--gates", "false", "--wer_chart", "false",
            "--exp_dir", str(root / "exp")]


def read_csv(path: Path):
    lines = path.read_text().splitlines()
    assert lines[0] == "model,layer,measure,comparison,value"
    rows = {}
    for line in lines[1:]:
        model, layer, measure, comparison, value = line.split(",")
        key = (model, int(layer), measure, comparison)
        assert key not in rows, key
        rows[key] = float(value)
    return rows


def test_layerwise_stage_writes_csv_figures_and_reruns_for_free(recipe, caplog):
    root, wav_scp = recipe
    main(layerwise_cmd(root, wav_scp))
    out = root / "analysis"
    rows = read_csv(out / "layerwise.csv")
    expected = {(m, layer, meas, comp) for m in ("wavlm", "hubert") for layer in range(N_STATES)
                for meas in ("mean_cca", "pwcca") for comp in ("pt_vs_ft", "ft_vs_delta")}
    assert set(rows) == expected
    for (model, layer, measure, comparison), value in rows.items():
        if model == "hubert" and comparison == "ft_vs_delta":
            assert math.isnan(value)  # fine-tuned == pre-trained: delta = 0, similarity undefined
        elif model == "hubert":
            assert value == pytest.approx(1.0, abs=1e-6)  # identical representations (CSV keeps 6 decimals)
        elif not math.isnan(value):
            assert 0.0 <= value <= 1.0
    # the perturbed model: its transformer changed, so the last state differs and delta is defined there
    assert rows[("wavlm", N_STATES - 1, "mean_cca", "pt_vs_ft")] < 1.0
    assert 0.0 <= rows[("wavlm", N_STATES - 1, "pwcca", "ft_vs_delta")] <= 1.0
    figures = [out / "layerwise_pt_vs_ft.png", out / "layerwise_ft_vs_delta.png"]
    for png in figures:
        assert_png(png)
    cache = yaml.safe_load((out / "cache" / "layerwise_wavlm.json").read_text())
    assert cache["result"]["frames"] == 400  # 5 utterances of ~1.7-2 s = ~460 frames, sampled down to 400
    assert "layerwise_pt_vs_ft.png" in (out / "figures.md").read_text()

    outputs = figures + [out / "layerwise.csv", out / "figures.md", *sorted((out / "cache").iterdir())]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    # data preparation rewrites wav.scp with the same lines on a rerun: still up to date
    Path(wav_scp).write_text(Path(wav_scp).read_text())
    caplog.clear()
    with caplog.at_level(logging.INFO):
        main(layerwise_cmd(root, wav_scp))
    assert {p: p.stat().st_mtime_ns for p in outputs} == before
    assert sum("layer-wise similarities up to date" in r.getMessage() for r in caplog.records) == 2

    # a new fine-tuned checkpoint invalidates that model's results only
    write_espnet_checkpoint(Path(yaml.safe_load((root / "upstreams.yaml").read_text())["hubert"]["path_or_url"]),
                            root / "exp" / "ft_hubert" / "model.pth", perturb_all(scale=0.2, seed=2))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        main(layerwise_cmd(root, wav_scp))
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("wavlm: layer-wise similarities up to date") for m in messages)
    assert not any(m.startswith("hubert: layer-wise similarities up to date") for m in messages)
    rows = read_csv(out / "layerwise.csv")
    assert not math.isnan(rows[("hubert", N_STATES - 1, "mean_cca", "ft_vs_delta")])
    assert (out / "layerwise.csv").stat().st_mtime_ns != before[out / "layerwise.csv"]


def test_models_without_finetuned_checkpoint_are_skipped(recipe, caplog):
    root, wav_scp = recipe
    (root / "exp" / "ft_hubert" / "model.pth").unlink()
    with caplog.at_level(logging.WARNING):
        main(layerwise_cmd(root, wav_scp) + ["--models", "hubert"])
    assert any("no fine-tuned checkpoint" in r.getMessage() for r in caplog.records)
    assert not (root / "analysis" / "layerwise.csv").exists()


def test_frame_plan_is_a_seeded_uniform_sample():
    plan = frame_plan([3, 5, 2], max_frames=100, seed=0)
    assert [p.tolist() for p in plan] == [[0, 1, 2], [0, 1, 2, 3, 4], [0, 1]]
    plan = frame_plan([300, 500, 200], max_frames=100, seed=0)
    assert sum(p.size for p in plan) == 100
    assert all(np.all(np.diff(p) > 0) and p.min() >= 0 for p in plan)
    assert plan[0].max() < 300 and plan[1].max() < 500 and plan[2].max() < 200
    assert [p.tolist() for p in frame_plan([300, 500, 200], 100, 0)] == [p.tolist() for p in plan]


def test_gate_means_over_valid_frames_only():
    """Utterance 0: 3 valid frames with weights (1,0), (0,1), (0.5,0.5) -> (0.5, 0.5);
    utterance 1: 1 valid frame (0.2, 0.8), its padded frames (junk 9s) are ignored."""
    gate = torch.tensor([
        [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]],
        [[0.2, 0.8], [9.0, 9.0], [9.0, 9.0]],
    ])
    means = utterance_gate_means(gate, torch.tensor([3, 1]))
    np.testing.assert_allclose(means, [[0.5, 0.5], [0.2, 0.8]], atol=1e-7)
    with pytest.raises(ValueError, match="no frames"):
        utterance_gate_means(gate, torch.tensor([3, 0]))


# --------------------------------------------------------------------------- WER chart


def write_scored(root: Path, system: str, refs: dict, hyps: dict, test_set: str = "test") -> None:
    from espnet_delta.scoring import score

    ref_dir = root / "data" / test_set
    ref_dir.mkdir(parents=True, exist_ok=True)
    (ref_dir / "text").write_text("".join(f"{u} {t}\n" for u, t in refs.items()))
    job = root / "exp" / system / "decode" / test_set
    job.mkdir(parents=True)
    (job / "text").write_text("".join(f"{u} {t}\n" for u, t in hyps.items()))
    score(ref_dir / "text", job / "text", job / "score_wer", use_sctk=False, system=system, test_set=test_set)


def test_wer_chart_with_paired_bootstrap_intervals(tmp_path):
    """Each utterance has 2 reference words.

    * perfect: 0 errors everywhere -> WER 0 in every resample -> interval [0, 0];
    * half: exactly 1 error in every utterance -> WER 50 in every resample -> [50, 50];
    * mixed: 0 or 2 errors per utterance (WER 50 overall) -> resamples vary, so low < 50 < high.
    """
    refs = {f"u{k}": "HELLO WORLD" for k in range(20)}
    write_scored(tmp_path, "perfect", refs, refs)
    write_scored(tmp_path, "half", refs, {u: "HELLO THERE" for u in refs})
    write_scored(tmp_path, "mixed", refs, {u: ("HELLO WORLD" if k % 2 else "BYE NOW") for k, u in enumerate(refs)})
    cmd = ["--out_dir", str(tmp_path / "analysis"), "--exp_dir", str(tmp_path / "exp"), "--layerwise", "false",
           "--gates", "false", "--n_resamples", "500"]
    main(cmd)
    out = tmp_path / "analysis"
    assert_png(out / "wer_test.png")
    table = {}
    for line in (out / "wer_intervals.tsv").read_text().splitlines()[2:]:
        test_set, system, wer, low, high = line.split("\t")
        table[system] = (float(wer), float(low), float(high))
    assert table["perfect"] == (0.0, 0.0, 0.0)
    assert table["half"] == (50.0, 50.0, 50.0)
    wer, low, high = table["mixed"]
    assert wer == 50.0 and low < 50.0 < high
    assert "wer_test.png" in (out / "figures.md").read_text()
    mtime = (out / "wer_test.png").stat().st_mtime_ns
    main(cmd)
    assert (out / "wer_test.png").stat().st_mtime_ns == mtime


# --------------------------------------------------------------------------- MoE gates


def build_moe_system(job: Path, layout: dict, gate_weight: torch.Tensor) -> None:
    """An ESPnet fusion system (cached features, moe) with a chosen gate, as stage 7 leaves it."""
    import json

    from espnet_delta.asr.register import register

    register()
    from espnet2.tasks.asr import ASRTask

    job.mkdir(parents=True)
    (job / "tokens.txt").write_text("<blank>\n<unk>\nA\nB\n<space>\n<sos/eos>\n")
    args = ASRTask.get_parser().parse_args([
        "--token_list", str(job / "tokens.txt"), "--frontend", "cached_fusion",
        "--frontend_conf", json.dumps({"layout": layout, "deltas": ["hubert"], "mode": "delta", "fusion": "moe"}),
        "--encoder", "identity", "--decoder", "none", "--model", "espnet_ctc_wer",
        "--model_conf", json.dumps({"ctc_weight": 1.0}), "--normalize", "none", "--specaug", "none",
        "--output_dir", str(job),
    ])
    model = ASRTask.build_model(args)
    with torch.no_grad():
        model.frontend.head.fusion.gate.weight.copy_(gate_weight)
    (job / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), job / "valid.wer_ctc.best.pth")


def test_gate_histograms_of_moe_systems(tmp_path):
    """Gate W = [[1, 0, ...], [0, ...]]: the reference's weight at frame t is
    softmax([x_t0, 0])_0 = sigmoid(x_t0). Each utterance's reference column 0 is a constant v,
    so its mean weight is sigmoid(v) exactly when padded frames (value 0 -> 0.5) are excluded."""
    import kaldiio

    dim = 4
    layout = {"streams": [{"name": n, "dim": dim} for n in ("wavlm.ft", "hubert.pt", "hubert.ft")]}
    weight = torch.zeros(2, dim)
    weight[0, 0] = 1.0
    build_moe_system(tmp_path / "exp" / "fusion_moe", layout, weight)
    (tmp_path / "exp" / "fusion_cat").mkdir()  # not a MoE system: ignored
    concat = {"frontend_conf": {"fusion": "concat"}}
    (tmp_path / "exp" / "fusion_cat" / "config.yaml").write_text(yaml.safe_dump(concat))
    values = {"a": (10, 2.0), "b": (4, -1.0), "c": (7, 0.0)}
    feats = tmp_path / "feats" / "test"
    feats.mkdir(parents=True)
    gen = np.random.default_rng(0)
    with kaldiio.WriteHelper(f"ark,scp:{feats / 'feats.ark'},{feats / 'feats.scp'}") as writer:
        for utt, (frames, v) in values.items():
            mat = gen.standard_normal((frames, 3 * dim)).astype(np.float32)
            mat[:, 0] = v
            writer(utt, mat)
    out = tmp_path / "analysis"
    main(["--out_dir", str(out), "--exp_dir", str(tmp_path / "exp"), "--feats_dir", str(tmp_path / "feats"),
          "--gate_sets", "test", "--layerwise", "false", "--wer_chart", "false", "--batch_size", "2"])
    lines = (out / "gates_moe_test.tsv").read_text().splitlines()
    assert lines[0] == "utt\twavlm (ft)\tdelta hubert"
    got = {u: (float(a), float(b)) for u, a, b in (line.split("\t") for line in lines[1:])}
    for utt, (_, v) in values.items():
        expected = 1.0 / (1.0 + math.exp(-v))
        assert got[utt] == pytest.approx((expected, 1.0 - expected), abs=1e-6), utt
    assert_png(out / "gates_moe_test.png")
    assert not list(out.glob("gates_cat_*"))
    assert "gates_moe_test.png" in (out / "figures.md").read_text()
