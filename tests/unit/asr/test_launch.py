"""espnet_delta.launch: a stock ESPnet command line with the plugin registered.

The main test runs ESPnet's own ``espnet2.bin.launch`` -> ``espnet2.bin.asr_train`` and
``espnet2.bin.asr_inference`` through the launcher, as ESPnet's asr.sh does with
``--python "python3 -m espnet_delta.launch"``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[3]
LAUNCH = [sys.executable, "-m", "espnet_delta.launch"]
NLTK_LINE = "[nltk_data]"


def run(cmd, cwd=None, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def test_code_script_and_module_run_like_python(tmp_path):
    out = run([*LAUNCH, "-c", "import sys; print(__name__, sys.argv)", "x", "y"]).stdout
    assert out.strip() == "__main__ ['-c', 'x', 'y']"

    script = tmp_path / "sub" / "show.py"
    script.parent.mkdir()
    script.write_text("import sys\nprint(__name__, sys.argv[1:], sys.path[0], __file__)\n")
    out = run([*LAUNCH, str(script), "a", "--b"]).stdout.split()
    assert out == ["__main__", "['a',", "'--b']", str(script.parent), str(script)]

    data = tmp_path / "x.json"
    data.write_text('{"b": 1, "a": [2]}')
    out = run([*LAUNCH, "-m", "json.tool", "--sort-keys", "--compact", str(data)]).stdout
    assert out.strip() == '{"a":[2],"b":1}'

    assert run([*LAUNCH], check=False).returncode == 2
    missing = run([*LAUNCH, "-m", "no_such_module_xyz"], check=False)
    assert missing.returncode == 1 and "No module named no_such_module_xyz" in missing.stderr
    failing = run([*LAUNCH, "-c", "raise SystemExit(7)"], check=False)
    assert failing.returncode == 7


SPAWN_SCRIPT = """
import multiprocessing, sys

def report(queue):
    hooks = [getattr(f, "espnet_delta_hook") for f in sys.meta_path if hasattr(f, "espnet_delta_hook")]
    queue.put(sorted(hooks))

if __name__ == "__main__":
    ctx = multiprocessing.get_context("spawn")  # as ESPnet's multi-GPU training starts its workers
    queue = ctx.Queue()
    worker = ctx.Process(target=report, args=(queue,))
    worker.start()
    print(queue.get())
    worker.join()
    sys.exit(worker.exitcode)
"""


def test_spawned_workers_get_the_hooks(tmp_path):
    """A "spawn" worker re-imports __main__; through the launcher it installs the hooks first,
    and the target's own functions (``report``) still resolve in the worker."""
    script = tmp_path / "spawner.py"
    script.write_text(SPAWN_SCRIPT)
    assert run([*LAUNCH, str(script)]).stdout.strip() == "['espnet2.tasks.asr', 'g2p_en']"
    assert run([sys.executable, str(script)]).stdout.strip() == "[]"  # plain python: no hooks


def test_g2p_en_import_downloads_nothing():
    """g2p_en (imported with espnet2.tasks.asr) calls nltk.download at import for missing data;
    offline that prints [nltk_data] error lines. Through the launcher it prints none."""
    spy = ("import nltk; calls = []; nltk.download = lambda name, *a, **k: calls.append(name) or False; "
           "import g2p_en; print(calls)")
    called = run([sys.executable, "-c", spy]).stdout.strip()
    if called == "[]":
        pytest.skip("this machine has g2p_en's NLTK data: nothing to download")
    assert called == "['averaged_perceptron_tagger_eng', 'cmudict']"  # the trigger, found without network
    proc = run([*LAUNCH, "-c", "import g2p_en"])
    assert NLTK_LINE not in proc.stderr and NLTK_LINE not in proc.stdout


FAKE_RUN_PL = """#!/usr/bin/env bash
# Stand-in for Kaldi's utils/run.pl as espnet2.bin.launch calls it: [--opt value ...] LOG CMD...
while [[ "$1" == --* ]]; do shift 2; done
log=$1; shift
mkdir -p "$(dirname "${log}")"
"$@" >"${log}" 2>&1
"""


def fusion_config(tiny_upstreams, finetuned) -> dict:
    return {
        "frontend": "delta_fusion",
        "frontend_conf": {
            "reference": {"upstream": "wavlm_local", "path_or_url": str(tiny_upstreams["wavlm"]),
                          "finetuned": str(finetuned["wavlm"])},
            "deltas": [{"upstream": "hubert_local", "path_or_url": str(tiny_upstreams["hubert"]),
                        "finetuned": str(finetuned["hubert"])}],
            "fusion": "xattn",
            "mode": "delta",
            "fusion_conf": {"num_heads": 4},
        },
        "specaug": None,
        "normalize": None,
        "encoder": "identity",
        "decoder": "none",
        "model": "espnet_ctc_wer",
        "model_conf": {"ctc_weight": 1.0},
        "optim": "adamw",
        "optim_conf": {"lr": 0.005},
        "max_epoch": 1,
        "num_iters_per_epoch": 3,
        "batch_type": "unsorted",
        "batch_size": 2,
        "best_model_criterion": [["valid", "wer_ctc", "min"]],
        "num_workers": 0,
    }


def test_stock_espnet_train_and_inference_through_the_launcher(tiny_upstreams, finetuned, mini_data, tmp_path):
    from espnet_delta.data.shapes import write_speech_shape

    (tmp_path / "train.yaml").write_text(yaml.safe_dump(fusion_config(tiny_upstreams, finetuned)))
    shapes = {s: write_speech_shape(mini_data / s / "wav.scp", tmp_path / f"{s}_shape") for s in ("train", "dev")}
    run_pl = tmp_path / "run.pl"
    run_pl.write_text(FAKE_RUN_PL)
    run_pl.chmod(0o755)
    exp = tmp_path / "exp"
    # asr.sh's stage 11 with python="python3 -m espnet_delta.launch" (${python} unquoted, so split)
    run([
        *LAUNCH, "-m", "espnet2.bin.launch", "--cmd", f"{run_pl} --name fusion", "--log", str(exp / "train.log"),
        "--ngpu", "0", "--num_nodes", "1", "--init_file_prefix", str(exp / ".dist_init_"),
        "--multiprocessing_distributed", "true", "--",
        *LAUNCH, "-m", "espnet2.bin.asr_train", "--use_preprocessor", "true", "--token_type", "char",
        "--token_list", str(mini_data / "tokens.txt"), "--config", str(tmp_path / "train.yaml"),
        "--train_data_path_and_name_and_type", f"{mini_data}/train/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", f"{mini_data}/train/text,text,text",
        "--valid_data_path_and_name_and_type", f"{mini_data}/dev/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{mini_data}/dev/text,text,text",
        "--train_shape_file", str(shapes["train"]), "--valid_shape_file", str(shapes["dev"]),
        "--resume", "true", "--output_dir", str(exp),
    ])
    model_file = exp / "valid.wer_ctc.best.pth"
    assert model_file.is_file(), (exp / "train.log").read_text()[-3000:]
    saved = torch.load(model_file, map_location="cpu", weights_only=True)
    assert any(k.startswith("frontend.head.fusion.attention.") for k in saved)  # the trained fusion head
    assert not any("upstream" in k for k in saved)
    assert NLTK_LINE not in (exp / "train.log").read_text()

    keys = tmp_path / "keys.scp"
    keys.write_text("".join((mini_data / "test" / "wav.scp").read_text().splitlines(keepends=True)[:2]))
    out = tmp_path / "decode"
    proc = run([
        *LAUNCH, "-m", "espnet2.bin.asr_inference", "--config", str(REPO / "egs2/myst/asr1/conf/decode_ctc.yaml"),
        "--ngpu", "0", "--data_path_and_name_and_type", f"{mini_data}/test/wav.scp,speech,sound",
        "--key_file", str(keys), "--asr_train_config", str(exp / "config.yaml"),
        "--asr_model_file", str(model_file), "--output_dir", str(out),
    ])
    assert NLTK_LINE not in proc.stderr  # espnet2.tasks.asr was imported through the launcher
    hyps = (out / "1best_recog" / "text").read_text().splitlines()
    assert [line.split(maxsplit=1)[0] for line in hyps] == [line.split()[0] for line in keys.read_text().splitlines()]
