"""Every paper-scale training config builds and takes one optimizer step (issue 22, part 4).

The fast half of the dry runs (docs/dry_run.md): for every training job the paper commands
would run, the job planner (espnet_delta.recipe.plan, the engine's own call) renders its
train.yaml; ESPnet builds the model from it with the hub names mapped to NARROW
paper-topology checkpoints (``make_paper_checkpoints --width narrow``: the real depth, layer
indices, heads of Whisper and frame counts, 64 wide), and one update runs on two short
synthetic utterances (tests/paper_step.py: loss finite, frozen parameters unchanged, every
parameter with a gradient changed, every freeze_param entry names something). A config that
cannot be built or trained fails here, named by its job. What the engine adds (data loading,
ESPnet's trainer loop, saving, decoding, scoring, merging) is ``make test-dry-run``'s.

The jobs, by paper command:

* ``egs2/myst/asr1/run.sh`` with merging and Whisper-small, and ``paper_tables.sh`` at the full
  size: CTC fine-tuning of WavLM / HuBERT / wav2vec2 Large (conf/finetune.yaml = tuning/
  finetune_large.yaml, wav2vec2's per_model warm-up), the adult models of the merge and of
  Table 4 (``ft_*_adult``), Whisper-small child and adult (tuning/whisper_small_finetune.yaml),
  the fusion systems of conf/fusion_systems.yaml (= tuning/fusion_systems.yaml) and of the five
  tables' merged systems file (conf/tuning/paper, as paper_tables.sh merges it) on conf/fusion.yaml
  (= tuning/fusion_paper.yaml), Table 4's adult-delta systems on their own feature cache;
* ``transfer.sh``: theta_aug (specaug_large.yaml laid over the fine-tuning config, as
  local/transfer.sh renders it) and the two further fine-tunings (init_param loaded);
* the interface paper systems (tuning/interface_paper.yaml + interface_systems_paper.yaml, char);
* the SSHR paper systems on both base configs (egs2/mini_multilingual/asr1: sshr_mms300m.yaml,
  sshr_xlsr300m.yaml; char).

Left out as duplicates of a covered config: the 10 / 5 / 1 h sizes of paper_tables.sh (the same
configs on other data dirs), transfer.sh's ``kids/ft_wavlm`` (conf/finetune.yaml as ``ft_wavlm``),
and the phone (``phn``) units of the interface and SSHR systems (the same model, a phone token
list). Rendered and parsed by ESPnet but not stepped (:data:`SKIPPED`, about 40 s of CPU
less): ``ft_whisper_adult`` (checked to be ``ft_whisper``'s config on other data) and 20 of the
31 interface systems, each of whose interface kind at its upstream's depth and upstream are
stepped in another system (:func:`interface_cover`, checked on the rendered files). Whisper-small
keeps its head count and 30-s windows (about 3 s of CPU per step). Fusion systems read random
cached features in the column layout stage 6 writes for the narrow models
(:func:`espnet_delta.features.config.layout_for` of the extraction config that
``make_extract_config`` writes); the fine-tuned checkpoints that fusion, delta interfaces and the
transfer read are state dicts of the models built from the rendered fine-tuning configs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
import yaml

import paper_step

REPO = Path(__file__).resolve().parents[2]
MYST = REPO / "egs2" / "myst" / "asr1"
CONF, TUNING = MYST / "conf", MYST / "conf" / "tuning"
ML = REPO / "egs2" / "mini_multilingual" / "asr1" / "conf" / "tuning"
UPSTREAMS = ["wavlm", "hubert", "wav2vec2"]  # run.sh's --upstreams (the first is the reference)
ADULT_UPSTREAMS = ["hubert", "wav2vec2"]     # paper_tables.sh's --adult_upstreams (Table 4)
TRANSFER_SCALE = "0.5"
SSHR_CONFIGS = {"sshr_mms300m": "mms_300m", "sshr_xlsr300m": "xls_r_300m"}  # base config -> --upstreams
N_TRAIN = 1000  # lines of the training sets' shape / feats.scp files: only the warm-up step counts read them
#: the recipe's configs that are the paper configs under conf/tuning, byte for byte
TWINS = [("finetune.yaml", "finetune_large.yaml"), ("fusion.yaml", "fusion_paper.yaml"),
         ("fusion_systems.yaml", "fusion_systems.yaml")]


def table_files() -> List[Path]:
    return [TUNING / "paper" / f"table{n}_systems.yaml" for n in range(1, 6)]


def plan_calls(root: Path) -> List[Tuple[str, str, Path, List[str]]]:
    """(group, family, exp dir, planner options) of every paper command's trainings, the
    options as local/asr.sh (and transfer.sh / paper_tables.sh) hand them to the planner."""
    def engine(exp: str, upstream_conf: Path, upstreams: List[str], feats: str = "feats", train: str = "train"):
        return ["--exp_dir", str(root / exp), "--data_dir", str(root / "data"), "--shape_dir", str(root / "shapes"),
                "--feats_dir", str(root / feats), "--token_list", str(root / "tokens" / "char.txt"),
                "--phone_token_list", str(root / "tokens" / "phn.txt"), "--train_set", train, "--valid_set", "dev",
                "--upstream_conf", str(upstream_conf), "--upstreams", " ".join(upstreams)]

    up = CONF / "upstreams.yaml"
    myst = engine("exp", up, UPSTREAMS)
    adult = ["--adult_train_set", "libri_train", "--adult_valid_set", "libri_dev"]
    finetune = ["--finetune_config", str(CONF / "finetune.yaml")]
    fusion = ["--fusion_config", str(CONF / "fusion.yaml"), "--fusion_systems"]
    calls = [
        ("myst", "finetune", root / "exp", myst + adult + finetune + ["--adult_upstreams", " ".join(ADULT_UPSTREAMS)]),
        ("myst", "whisper", root / "exp", myst + adult + ["--whisper_config",
                                                          str(TUNING / "whisper_small_finetune.yaml")]),
        ("myst", "fusion", root / "exp", myst + fusion + [str(CONF / "fusion_systems.yaml")]),
        ("tables", "fusion", root / "exp_tables",
         engine("exp_tables", up, UPSTREAMS) + fusion + [str(root / "paper_systems.yaml")]),
        ("table4_adult", "fusion", root / "exp_adult",
         engine("exp_adult", up, UPSTREAMS, "feats_adult") + fusion
         + [str(TUNING / "paper" / "table4_adult_systems.yaml")]),
        ("transfer_aug", "finetune", root / "exp_aug",
         engine("exp_aug", up, ["wavlm"], train="train_sp") + ["--finetune_config", str(root / "finetune_aug.yaml")]),
        ("transfer_kids", "transfer", root / "exp_kids",
         engine("exp_kids", up, ["wavlm"], train="kids_train") + finetune + ["--transfer_scale", TRANSFER_SCALE]),
        ("interface", "interface", root / "exp", myst + [
            "--interface_config", str(TUNING / "interface_paper.yaml"),
            "--interface_systems", str(TUNING / "interface_systems_paper.yaml"), "--interface_units", "char"]),
    ]
    for base, upstream in SSHR_CONFIGS.items():
        options = engine(f"exp_{base}", ML / "upstreams_sshr.yaml", [upstream])
        calls.append((base, "sshr", root / f"exp_{base}", options + [
            "--sshr_config", str(ML / f"{base}.yaml"), "--sshr_systems", str(ML / "sshr_systems_paper.yaml"),
            "--sshr_units", "char"]))
    return calls


def planner(family: str, options: List[str], write: bool) -> List[Path]:
    from espnet_delta.recipe import plan

    return [Path(d) for d in plan.run(plan.get_parser().parse_args([family, "--write", str(write).lower(), *options]))]


def job_ids(root: Path, write: bool) -> Dict[str, Path]:
    """'<group>/<job dir>' -> job dir, in the planner's order."""
    out = {}
    for group, family, exp, options in plan_calls(root):
        for job in planner(family, options, write):
            out[f"{group}/{job.relative_to(exp)}"] = job
    return out


def collect_ids() -> List[str]:
    """The job ids at collection time: the planner's listing (nothing written) on a dummy root;
    the tables' merged systems file is the one input that must exist for it."""
    import tempfile

    from espnet_delta.bin.paper_tables import merge_systems

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "paper_systems.yaml").write_text(yaml.safe_dump(merge_systems(table_files()), sort_keys=False))
        return list(job_ids(Path(tmp), write=False))


JOBS = collect_ids()


def interface_cover() -> Dict[str, str]:
    """The interface systems left out of the steps -> why. Each system is a kind (interface,
    its options, the downstream's options, delta fusion or not) on an upstream of one depth
    (13 or 25 hidden states); the steps keep a cover in which every kind meets both depths
    and every upstream is loaded: first the systems that bring a new kind and a new upstream,
    then the first system of each kind left, then of each upstream left (11 of the 31)."""
    from espnet_delta.ssl.paper_topology import topology

    table = yaml.safe_load((CONF / "upstreams.yaml").read_text())
    systems = yaml.safe_load((TUNING / "interface_systems_paper.yaml").read_text())

    def keys(system):
        if "deltas" in system:
            upstream = ("delta", UPSTREAMS[0], *system["deltas"])
            depth = topology(table[UPSTREAMS[0]]["upstream"]).layers
        else:
            entry = system.get("upstream", UPSTREAMS[0])
            upstream = (entry if isinstance(entry, dict) else table[entry])["upstream"]
            depth = topology(upstream).layers
        kind = json.dumps([system["interface"], system.get("interface_conf"), system.get("encoder_conf"),
                           "deltas" in system, depth], sort_keys=True)
        return kind, upstream

    stepped, kinds, upstreams = [], set(), set()
    for rule in ("both", "kind", "upstream"):
        for name, system in systems.items():
            kind, upstream = keys(system)
            new = {"both": kind not in kinds and upstream not in upstreams, "kind": kind not in kinds,
                   "upstream": upstream not in upstreams}[rule]
            if new and name not in stepped:
                stepped.append(name)
                kinds.add(kind)
                upstreams.add(upstream)
    return {f"interface/if_{name}_char": "its interface kind at its upstream's depth and its upstream are stepped "
            "in other systems (the interface's options, downstream and loss are the same)"
            for name in systems if name not in stepped}


#: job id -> why it is not stepped (every one is still rendered and parsed by ESPnet; the
#: Whisper adult job is checked to be ft_whisper's config on other data)
SKIPPED = {"myst/ft_whisper_adult": "ft_whisper's config on the adult data (one Whisper step is ~3 s of CPU)",
           **interface_cover()}
STEPPED = [job for job in JOBS if job not in SKIPPED]
DATA_KEYS = ("train_data_path_and_name_and_type", "valid_data_path_and_name_and_type", "train_shape_file",
             "valid_shape_file")


@pytest.fixture(scope="module", autouse=True)
def narrow_world(paper_models, tmp_path_factory):
    """The model map of the narrow checkpoints for every loader, a scratch working directory
    (relative paths of the configs, downloads/whisper and downloads/upstreams/mms_300m.pt, land
    there; mms_300m is then redirected through the map by its file stem), one thread per op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ESPNET_DELTA_MODEL_MAP", str(paper_models / "model_map.yaml"))
        mp.chdir(tmp_path_factory.mktemp("cwd"))
        yield
    torch.set_num_threads(threads)


def write_lines(path: Path, lines: List[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def save_finetuned(train_yaml: Path, out: Path, seed: int) -> None:
    """The stage-4 checkpoint of a fine-tuning job: the state dict of the model its config builds,
    the upstream's transformer moved a little (so deltas are not zero)."""
    args = paper_step.espnet_args(train_yaml, out.parent / "build")
    model, _, _ = paper_step.build(args)
    gen = torch.Generator().manual_seed(seed)
    state = {k: v + 0.01 * torch.randn(v.shape, generator=gen) if ".encoder.layers." in k and v.is_floating_point()
             else v for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)


def write_feature_cache(root: Path, feats: str, upstreams: Path, finetuned: Dict[str, Path]) -> None:
    """``<feats>/train/layout.json`` as stage 6 writes it for these models (extraction config by
    make_extract_config, layout of the built extractor) and a feats.scp of N_TRAIN lines."""
    from espnet_delta.features.config import ExtractionConfig, layout_for
    from espnet_delta.recipe import make_extract_config

    mapping = [f"{name}={path}" for name, path in finetuned.items()]
    args = make_extract_config.get_parser().parse_args([
        "--upstream_conf", str(upstreams), "--reference", UPSTREAMS[0], "--others", *UPSTREAMS[1:],
        "--finetuned", str(root / "missing" / "{name}.pth"), "--finetuned_map", *mapping, "--out", "unused"])
    config = ExtractionConfig.from_dict(make_extract_config.build_config(args))
    layout = layout_for(config.build_extractor(), config, "float32")
    layout.save(root / feats / "train" / "layout.json")
    write_lines(root / feats / "train" / "feats.scp", [f"u{i} feats.ark:{i}" for i in range(N_TRAIN)])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Dict[str, Path]:
    """job id -> train.yaml written by the planner, with every input the planner and the models
    read: token lists, shape files, the fine-tuned checkpoints, the feature caches' layouts."""
    from espnet_delta.bin import paper_tables
    from espnet_delta.recipe.train_config import render
    from espnet_delta.fileio import write_yaml_atomic

    root = tmp_path_factory.mktemp("paper_configs")
    paper_step.write_token_list(root / "tokens" / "char.txt")
    paper_step.write_token_list(root / "tokens" / "phn.txt")
    for name in ("train", "dev", "libri_train", "libri_dev", "train_sp", "kids_train"):
        write_lines(root / "shapes" / name / "speech_shape", [f"u{i} 16000" for i in range(N_TRAIN)])
    paper_tables.main(["--tables", "1", "2", "3", "4", "5", "--systems_dir", str(TUNING / "paper"),
                       "--write_systems", str(root / "paper_systems.yaml"), "--log_level", "WARNING"])
    # transfer.sh stage 2: render_config --base finetune.yaml --set-from specaug_large.yaml:specaug=specaug ...
    specaug = TUNING / "specaug_large.yaml"
    write_yaml_atomic(render(CONF / "finetune.yaml", set_from=[f"{specaug}:specaug=specaug",
                                                                f"{specaug}:specaug_conf=specaug_conf"]),
                      root / "finetune_aug.yaml")
    calls = plan_calls(root)
    written: Dict[str, Path] = {}

    def run(group_family):
        for group, family, exp, options in calls:
            if (group, family) == group_family:
                for job in planner(family, options, write=True):
                    written[f"{group}/{job.relative_to(exp)}"] = job / "train.yaml"

    run(("myst", "finetune"))
    finetuned = {}
    for k, name in enumerate(UPSTREAMS):  # stage 4's outputs, read by stages 6-7, the delta interface, the transfer
        finetuned[name] = root / "exp" / f"ft_{name}" / "valid.wer_ctc.best.pth"
        save_finetuned(written[f"myst/ft_{name}"], finetuned[name], seed=k)
    for name in ("transfer_s" + TRANSFER_SCALE, "ft_wavlm"):  # transfer.sh stages 3-4 (kids baseline, transferred)
        (root / "exp_kids" / name).mkdir(parents=True)
        (root / "exp_kids" / name / "valid.wer_ctc.best.pth").write_bytes(finetuned["wavlm"].read_bytes())
    write_feature_cache(root, "feats", CONF / "upstreams.yaml", finetuned)
    # Table 4's adult-delta cache: the same models and columns (the adult checkpoints of the same topologies)
    write_lines(root / "feats_adult" / "train" / "feats.scp", [f"u{i} feats.ark:{i}" for i in range(N_TRAIN)])
    layout = (root / "feats" / "train" / "layout.json").read_bytes()
    (root / "feats_adult" / "train" / "layout.json").write_bytes(layout)
    for key in [(g, f) for g, f, _, _ in calls if (g, f) != ("myst", "finetune")]:
        run(key)
    return written


def test_the_planner_lists_every_job_the_ids_name(rendered):
    """The rendered jobs are the collected ids (so no job of a paper command escapes the steps)."""
    assert list(rendered) == JOBS
    assert len([j for j in JOBS if j.startswith("interface/")]) == len(yaml.safe_load(
        (TUNING / "interface_systems_paper.yaml").read_text()))


def test_every_rendered_config_parses_and_the_skipped_ones_duplicate_stepped_ones(rendered, tmp_path):
    """ESPnet's parser takes every rendered config, the skipped ones too (an unknown key fails);
    a skipped job's claim to duplicate a stepped one is checked on the rendered files."""
    assert set(SKIPPED) < set(JOBS) and len(STEPPED) >= 50

    def load(job):
        return yaml.safe_load(rendered[job].read_text())

    for job in JOBS:
        paper_step.espnet_args(rendered[job], tmp_path / "parse")
    assert load("transfer_aug/ft_wavlm")["specaug"] == "specaug"  # theta_aug: SpecAugment laid over the config
    whisper, adult = load("myst/ft_whisper"), load("myst/ft_whisper_adult")
    assert {k: v for k, v in whisper.items() if k not in DATA_KEYS} == {k: v for k, v in adult.items()
                                                                        if k not in DATA_KEYS}

    def kind(config):  # everything but the upstream the interface reads
        conf = {k: v for k, v in config["frontend_conf"].items() if k not in ("upstream", "reference", "deltas")}
        return json.dumps([config["frontend"], conf, config["encoder_conf"]], sort_keys=True)

    stepped = [load(j) for j in STEPPED if j.startswith("interface/")]
    for job in (j for j in SKIPPED if j.startswith("interface/")):
        config = load(job)
        assert any(kind(c) == kind(config) for c in stepped), f"{job}: its kind is not stepped"
        assert any(c["frontend_conf"].get("upstream") == config["frontend_conf"]["upstream"] for c in stepped), job


@pytest.mark.parametrize("recipe,paper", TWINS)
def test_the_recipe_runs_the_paper_configs(recipe, paper):
    """run.sh reads conf/*.yaml; the paper configs are conf/tuning/*: one file, so stepping one covers both."""
    assert hashlib.sha256((CONF / recipe).read_bytes()).hexdigest() == \
        hashlib.sha256((TUNING / paper).read_bytes()).hexdigest(), f"conf/{recipe} != conf/tuning/{paper}"


def batch_for(config: Dict) -> Dict[str, torch.Tensor]:
    if config.get("frontend") == "cached_fusion":
        layout = json.loads(Path(config["frontend_conf"]["layout"]).read_text())
        return paper_step.feature_batch(sum(s["end"] - s["start"] for s in layout["streams"]))
    return paper_step.waveform_batch()


@pytest.mark.parametrize("job", STEPPED)
def test_paper_config_builds_and_steps(rendered, job, tmp_path):
    """ESPnet builds the job's model from its train.yaml and one update of the config's optimizer trains it."""
    train_yaml = rendered[job]
    config = yaml.safe_load(train_yaml.read_text())
    args = paper_step.espnet_args(train_yaml, tmp_path)
    result = paper_step.step(args, batch_for(config))
    assert torch.isfinite(torch.tensor(result.loss)), f"{job}: loss {result.loss}"
    assert not result.freeze_unmatched, f"{job}: freeze_param names no parameter: {result.freeze_unmatched}"
    assert result.trainable, f"{job}: nothing to train"
    assert not result.frozen_changed, f"{job}: frozen parameters changed: {result.frozen_changed[:5]}"
    assert not result.not_updated, f"{job}: parameters with a gradient not updated: {result.not_updated[:5]}"
    assert not result.unused or args.unused_parameters, (
        f"{job}: trainable parameters outside the loss {result.unused[:4]}: ESPnet's DDP (--ngpu > 1) stops at "
        "the second iteration unless the config sets unused_parameters: true")
