"""The stage engine end to end on a tiny mini_myst: stages 1-8 -> RESULTS.md; reruns change nothing.

One module-scoped run of every stage (about 3 minutes on 2 CPU cores) is shared by the
tests, so each test also passes when run alone.
"""

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from conftest import needs_mini_corpus_tools

pytestmark = needs_mini_corpus_tools

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "egs2" / "mini_myst" / "asr1"
CORPUS = "downloads/mini_myst"
SCALE = "0.03"
SYSTEMS = ("ft_wavlm", "ft_hubert", "ft_wav2vec2", "fusion_wavlm+dhubert_concat", "fusion_wavlm+dhubert+dw2v2_moe",
           "fusion_wavlm+hubert_concat_full")
# stage 8's dev grids (two points per method and SA reading) and the job names of their points
MERGE_GRIDS = ("--merge_lambdas", "0.2", "--merge_alphas", "0.8 0.9", "--merge_lerp_coefs", "0.3 0.7",
               "--merge_ta_scales", "0.5 1.0", "--merge_ties_topks", "20", "--merge_ties_scales", "0.5 1.0")
MERGE_POINTS = {
    "sa": {f"sa_{s}_l0.2_a{a}" for s in ("depth_power", "linear_exponent", "adult_power") for a in ("0.8", "0.9")},
    "lerp": {"lerp_c0.3", "lerp_c0.7"},
    "ta": {"ta_s0.5", "ta_s1"},
    "ties": {"ties_k20_s0.5", "ties_k20_s1"},
}


def run_engine(cwd: Path, *args: str) -> str:
    env = dict(os.environ, PATH=f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}")
    proc = subprocess.run(
        ["bash", str(REPO / "local" / "asr.sh"), "--mini_corpus_dir", CORPUS,
         "--mini_corpus_scale", SCALE, "--tiny_upstream_dir", "downloads/upstreams", "--subset_hours", "",
         "--nj", "2", "--adult_train_set", "libri_train", *MERGE_GRIDS,
         # stage 3 at a token size: conf/upstreams.yaml names the pre-trained checkpoints
         "--pretrained_upstream_dir", "downloads/upstreams_pt", "--pretrain_opts", "--epochs 1 --num_clusters 8",
         # padded decoding batches (frontend s3prl_exact): the hypotheses must equal those recomputed
         # one utterance at a time (test_decoded_text_is_the_greedy_ctc_path)
         "--decode_batch_size", "4", *args],
        cwd=cwd, env=env, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise AssertionError(f"asr.sh {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout + proc.stderr


def tree_digest(root: Path, skip: tuple = ()) -> Dict[str, str]:
    """relative path -> sha256 of every file (hidden ones too) and "dir" for every folder."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        data = path.read_bytes() if path.is_file() else None
        if rel == "RESULTS.md" and data is not None:
            # its "## Environments" block records the date of the run: compare the rest
            data = re.sub(rb"## Environments\n.*?\n\n", b"", data, flags=re.S)
        out[rel] = "dir" if data is None else hashlib.sha256(data).hexdigest()
    return out


@dataclass
class Run:
    root: Path
    log: str
    corpus_before: Dict[str, str]


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> Run:
    """The mini recipe's configs with one-epoch trainings and three fusion systems, run through stages 1-8.

    The corpus is generated first, exactly as stage 1 would (stage 1 then finds it complete),
    so that its digest can be taken before preparation touches anything.
    """
    root = tmp_path_factory.mktemp("recipe")
    shutil.copytree(RECIPE / "conf", root / "conf")
    (root / "local").symlink_to(RECIPE / "local")  # stage 1 runs the recipe's ./local/data.sh
    for name in ("finetune.yaml", "fusion.yaml"):
        conf = yaml.safe_load((root / "conf" / name).read_text())
        conf["max_epoch"] = 1
        (root / "conf" / name).write_text(yaml.safe_dump(conf))
    systems = yaml.safe_load((root / "conf" / "fusion_systems.yaml").read_text())
    keep = ["wavlm+dhubert_concat", "wavlm+dhubert+dw2v2_moe", "wavlm+hubert_concat_full"]
    (root / "conf" / "fusion_systems.yaml").write_text(yaml.safe_dump({k: systems[k] for k in keep}))
    subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "espnet_delta.bin.make_mini_corpus",
                    "--out", CORPUS, "--scale", SCALE, "--nj", "2"], cwd=root, check=True, capture_output=True)
    corpus_before = tree_digest(root / CORPUS)
    log = run_engine(root)
    return Run(root, log, corpus_before)


def results_wer_table(text: str) -> Dict[str, Dict[str, float]]:
    """system -> test set -> WER from the "## WER (%)" table of RESULTS.md."""
    section = text.split("## WER (%)\n", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    sets = section[0].strip("|").split("|")[1:]
    table = {}
    for line in section[2:]:
        name, *cells = line.strip("|").split("|")
        assert len(cells) == len(sets), line
        table[name] = dict(zip(sets, map(float, cells)))
    return table


def merge_grid(root: Path) -> Dict[str, List[List[str]]]:
    """method -> rows (method, reading, name, params, dev_wer, chosen) of exp/merge_grid.tsv."""
    rows: Dict[str, List[List[str]]] = {}
    for line in (root / "exp" / "merge_grid.tsv").read_text().splitlines()[1:]:
        if not line.startswith("#"):
            row = line.split("\t")
            rows.setdefault(row[0], []).append(row)
    return rows


def chosen_merge(root: Path, method: str) -> str:
    """The job dir name of the merged model stage 8 chose for ``method``."""
    (row,) = [r for r in merge_grid(root)[method] if r[5] == "*"]
    return f"merge_{row[2]}"


def ids_of(path: Path) -> List[str]:
    return [line.split(maxsplit=1)[0] for line in path.read_text().splitlines()]


def test_all_stages_end_with_results_md(ran):
    assert re.search(r"Successfully finished stages 1\.\.\d+\s*$", ran.log), ran.log[-2000:]
    wer = results_wer_table((ran.root / "RESULTS.md").read_text())
    assert set(SYSTEMS) <= set(wer), f"systems missing from RESULTS.md: {set(SYSTEMS) - set(wer)}"
    # every merge method's grid was searched on dev and its chosen point decoded on test
    merged = {s for s in wer if s.startswith("merge_")}
    assert merged == {chosen_merge(ran.root, m) for m in MERGE_POINTS}
    for method, names in MERGE_POINTS.items():
        assert chosen_merge(ran.root, method)[len("merge_"):] in names
    for system, by_set in wer.items():
        assert set(by_set) == {"dev", "test"}, system
        for test_set, value in by_set.items():
            # WER = 100 (S + D + I) / N from the counts in score.json (above 100 with many insertions,
            # which one-epoch models produce); result.txt's Sum/Avg line agrees
            score_dir = ran.root / "exp" / system / "decode" / test_set / "score_wer"
            counts = json.loads((score_dir / "score.json").read_text())["counts"]
            n, s, d, i = (counts[k] for k in ("words", "substitutions", "deletions", "insertions"))
            assert counts["correct"] + s + d == n > 0, (system, test_set)
            assert math.isfinite(value) and value >= 0.0
            assert value == pytest.approx(round(100.0 * (s + d + i) / n, 1), abs=1e-9), (system, test_set)
            avg = re.search(r"Sum/Avg\s*\|\s*(\d+)\s+(\d+)\s*\|(.*)\|", (score_dir / "result.txt").read_text())
            assert avg, score_dir / "result.txt"
            assert int(avg.group(2)) == n and float(avg.group(3).split()[4]) == pytest.approx(value, abs=0.051)
    layout = (ran.root / "dump" / "feats" / "train" / "layout.json").read_text()
    assert "hubert.pt" in layout and "wavlm.ft" in layout


def test_merge_grids_pick_the_best_dev_wer(ran):
    grid = merge_grid(ran.root)
    assert {m: {r[2] for r in rows} for m, rows in grid.items()} == MERGE_POINTS
    results = (ran.root / "RESULTS.md").read_text()
    for method, rows in grid.items():
        wers = [float(r[4]) for r in rows]
        assert all(w >= 0.0 for w in wers)
        best = rows[wers.index(min(wers))]  # the first of equal dev WERs
        assert best[5] == "*" and sum(r[5] == "*" for r in rows) == 1
        assert f"# best {method}: {best[2]}" in (ran.root / "exp" / "merge_grid.tsv").read_text()
        assert f"|{method}|{len(rows)}|merge_{best[2]}|" in results  # merge_results.md, appended
        # the grid's models were deleted after decoding dev; the chosen one is a job of its own
        assert not (ran.root / "exp" / "merge_grid" / best[2] / "valid.wer_ctc.best.pth").exists()
        assert (ran.root / "exp" / f"merge_{best[2]}" / "valid.wer_ctc.best.pth").is_file()
    sa = ran.root / "exp" / chosen_merge(ran.root, "sa")
    assert (sa / "merge_schedule.tsv").read_text().startswith("stack\tlayer\tc_child\tc_adult\trule\n")


def test_preparation_leaves_the_corpus_untouched(ran):
    assert tree_digest(ran.root / CORPUS) == ran.corpus_before


def test_rerun_changes_nothing(ran):
    # the run lock's record (exp/.run.owner: PID, command, log of the run holding exp/) names each new run
    skip = ("exp/logs", "exp/.run.owner")
    before = tree_digest(ran.root, skip=skip)
    model = ran.root / "exp" / "fusion_wavlm+dhubert_concat" / "valid.wer_ctc.best.pth"
    mtime = model.stat().st_mtime_ns
    started = time.time()
    log = run_engine(ran.root)
    # the job back-end keeps each job's output in exp/logs/<stage>.<k>.log
    job_logs = [p for p in (ran.root / "exp" / "logs").glob("*.log") if p.stat().st_mtime >= started - 1]
    log += "".join(p.read_text(errors="replace") for p in job_logs)
    assert "already trained" in log
    assert "not decoding again" in log
    assert model.stat().st_mtime_ns == mtime
    after = tree_digest(ran.root, skip=skip)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a rerun changed {changed[:20]}"


@pytest.mark.parametrize("job", ["ft_wavlm", "merge_ta"])
def test_decoded_text_is_the_greedy_ctc_path(ran, job, monkeypatch):
    """decode/test/text: one line per test utterance, the model's greedy CTC path recomputed here."""
    if job == "merge_ta":  # the task-arithmetic merge stage 8 chose on dev
        job = chosen_merge(ran.root, "ta")
    import soundfile
    import torch

    from espnet_delta.asr.inference import Speech2Text

    monkeypatch.chdir(ran.root)
    exp = Path("exp") / job
    hyp_lines = dict(line.split(" ", 1) if " " in line else (line, "")
                     for line in (exp / "decode" / "test" / "text").read_text().splitlines())
    assert ids_of(exp / "decode" / "test" / "text") == sorted(ids_of(Path("data") / "test" / "text"))
    s2t = Speech2Text(asr_train_config=str(exp / "config.yaml"), asr_model_file=str(exp / "valid.wer_ctc.best.pth"),
                      ctc_weight=1.0, beam_size=1, lm_weight=0.0, device="cpu")
    model = s2t.asr_model.eval()
    token_list = yaml.safe_load((exp / "config.yaml").read_text())["token_list"]
    for line in (Path("data") / "test" / "wav.scp").read_text().splitlines():
        utt, wav_path = line.split(maxsplit=1)
        speech = torch.from_numpy(soundfile.read(wav_path, dtype="float32")[0])[None]
        with torch.no_grad():
            enc, enc_lens = model.encode(speech, torch.tensor([speech.size(1)]))
            path = model.ctc.log_softmax(enc)[0, : int(enc_lens[0])].argmax(-1).tolist()
        ids = [t for k, t in enumerate(path) if t != 0 and (k == 0 or t != path[k - 1])]  # merge repeats, drop blank
        text = " ".join("".join(" " if token_list[t] == "<space>" else token_list[t] for t in ids).split())
        assert hyp_lines[utt] == text, (job, utt)


def test_merged_checkpoint_decodes_with_espnet_speech2text(ran, monkeypatch):
    """A merged checkpoint is a plain ESPnet model file: ESPnet's own inference loads and runs it.

    Like every ESPnet config, the merged config.yaml names files relative to the recipe dir.
    """
    import soundfile
    import torch

    from espnet_delta.asr.inference import Speech2Text

    monkeypatch.chdir(ran.root)
    job = Path("exp") / chosen_merge(ran.root, "ta")
    s2t = Speech2Text(asr_train_config=str(job / "config.yaml"), asr_model_file=str(job / "valid.wer_ctc.best.pth"),
                      ctc_weight=1.0, beam_size=2, lm_weight=0.0, device="cpu")
    merged = torch.load(job / "valid.wer_ctc.best.pth", map_location="cpu", weights_only=True)
    loaded = s2t.asr_model.state_dict()
    assert set(loaded) == set(merged)
    assert all(torch.equal(loaded[k], v) for k, v in merged.items())
    utt, path = (Path("data") / "test" / "wav.scp").read_text().splitlines()[0].split(maxsplit=1)
    wav, _ = soundfile.read(path, dtype="float32")
    text, tokens, token_ids, hyp = s2t(wav)[0]
    token_list = yaml.safe_load((job / "config.yaml").read_text())["token_list"]
    assert tokens == [token_list[i] for i in token_ids]
    # with ctc_weight 1.0 a finished hypothesis is scored by its CTC log-likelihood log P(y | x)
    # (all alignments): recompute it from the merged model's log-probabilities
    speech = torch.from_numpy(wav)[None]
    with torch.no_grad():
        enc, enc_lens = s2t.asr_model.encode(speech, torch.tensor([speech.size(1)]))
        log_probs = s2t.asr_model.ctc.log_softmax(enc)[0, : int(enc_lens[0])]
    nll = torch.nn.functional.ctc_loss(log_probs, torch.tensor(token_ids), [log_probs.size(0)], [len(token_ids)],
                                       blank=0, reduction="sum")
    assert float(hyp.score) == pytest.approx(-float(nll), abs=1e-3)


def test_speed_perturbation_writes_the_child_fine_tunings_set(ran, tmp_path):
    """--speed_perturb_factors: stage 2 writes <train_set>_sp (ESPnet's ids sp<f>-<utt>, one copy per
    factor, lengths / f) and its shape file, beside the sets it had; the recipe folder's data stays."""
    data, shapes = tmp_path / "data", tmp_path / "shapes"
    shutil.copytree(ran.root / "data", data, symlinks=True)
    run_engine(ran.root, "--stage", "2", "--stop_stage", "2", "--speed_perturb_factors", "0.9 1.1",
               "--data_dir", str(data), "--shape_dir", str(shapes), "--exp_dir", str(tmp_path / "exp"))
    train = {u: int(n) for u, n in (line.split() for line in (shapes / "train" / "speech_shape").read_text().splitlines())}
    sp = {u: int(n) for u, n in (line.split() for line in (shapes / "train_sp" / "speech_shape").read_text().splitlines())}
    # N samples at factor f become ceil(N / f)
    assert sp == {**{f"sp0.9-{u}": math.ceil(n / 0.9) for u, n in train.items()},
                  **{f"sp1.1-{u}": math.ceil(n / 1.1) for u, n in train.items()}}
    assert sorted(ids_of(data / "train_sp" / "text")) == sorted(sp)
    assert not (ran.root / "data" / "train_sp").exists()
