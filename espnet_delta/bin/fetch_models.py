"""Stage 0 and the model check of the later stages: the hub models the recipe's options need.

    python -m espnet_delta.bin.fetch_models --stages 0 <engine options>         # stage 0: fetch all
    python -m espnet_delta.bin.fetch_models --check true --stages 4 <options>   # stage 4's check

Fetch: every model the options need (:mod:`espnet_delta.recipe.models`) that is neither
mapped (``--model_map``) nor cached is downloaded into the cache its loader reads (S3PRL's
download dir, the Whisper download root), with a progress bar; each model is then loaded
once and its file and size printed. Check (the engine runs it first thing in stages 1, 4,
5, 6, 8 and 10, for that stage up to ``--stop_stage``, so a hub model of stage 10 stops the run
before stage 1's screening): one line per missing model naming the model, the path looked in and the
stage-0 command, then exit status 2; nothing is downloaded or loaded. A failed download
(no network, 404) is one line naming the model and the URL (exit status 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from espnet_delta.cli import add_bool_argument, add_log_level_argument, error_line, new_parser, setup_logging
from espnet_delta.recipe import models
from espnet_delta.ssl.hub import MODEL_MAP_ENV, HubModelError

MISSING = 2  # exit status of a missing model: the engine stops with it


def words(value: str) -> List[str]:
    return value.split()


def get_parser() -> argparse.ArgumentParser:
    p = new_parser(__doc__)
    p.add_argument("--stages", type=int, nargs="+", default=[0],
                   help="stages whose models are fetched or checked (0: all of stages 1-10); a check checks the "
                        "hub models of all and the local files of the first (the stage about to run)")
    add_bool_argument(p, "--check", default=False, help="only check that the models are present (exit 2 if not)")
    p.add_argument("--model_map", default=None, help=f"hub name -> local file YAML (default: ${MODEL_MAP_ENV})")
    p.add_argument("--base_url", default=None,
                   help=f"replace scheme and host of the hub URLs (a mirror; the tests' loopback server; default ${models.BASE_URL_ENV})")
    add_bool_argument(p, "--load", default=True, help="fetch: load each model once after the download")
    g = p.add_argument_group("the stage engine's options (local/asr.sh)")
    g.add_argument("--upstreams", type=words, default=["wavlm", "hubert", "wav2vec2"])
    g.add_argument("--adult_upstreams", type=words, default=[])
    g.add_argument("--adult_train_set", default="")
    g.add_argument("--upstream_conf", default="conf/upstreams.yaml")
    for name in ("finetune_config", "probe_config", "interface_systems", "sshr_systems", "whisper_config"):
        g.add_argument(f"--{name}", default="")
    g.add_argument("--whisper_asr_model", default="", help="the engine's --whisper_asr_model")
    g.add_argument("--screen_model", default="", help="the engine's --whisper_model (screening in stage 1)")
    g.add_argument("--screen_hyp", default="", help="the engine's --whisper_hyp (present: no screening)")
    g.add_argument("--screen_opts", default="", help="the engine's --whisper_opts (its --download_root)")
    add_log_level_argument(p)
    return p


def human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024
    return f"{size} B"


def load_once(model: models.Model) -> None:
    if model.kind == "s3prl":
        from espnet_delta.ssl.upstream import build_s3prl_upstream

        build_s3prl_upstream(model.name)
    elif model.kind == "whisper":
        from espnet_delta.whisper.load import load_whisper

        load_whisper(model.name, model.download_dir or None)


def run(args) -> int:
    if args.model_map:
        os.environ[MODEL_MAP_ENV] = str(Path(args.model_map).resolve())  # the loaders read it
    stages = list(models.STAGES) if 0 in args.stages else args.stages
    needed = models.needed_models(args, stages)
    missing = 0
    for model in needed:
        try:
            path, url = models.locate(model)
        except HubModelError as e:  # e.g. a mistyped hub name
            raise HubModelError(f"{e} (from {model.origin})") from None
        if args.check and url is None and args.stages[0] not in model.stages:
            continue  # a local file of a later stage (perhaps written by a stage before it) is checked there
        if path.is_file():
            logging.info("%s %s: %s (%s)", model.kind, model.name, path, human(path.stat().st_size))
        elif not args.check and url is None:  # written by an earlier stage (tiny upstreams) or copied by the user
            logging.warning("%s %s (from %s): not present yet (an earlier stage writes it, or copy it there); "
                            "nothing to download", model.kind, path, model.origin)
            continue
        elif args.check:
            logging.error("%s", models.missing_line(model, path, url))
            missing += 1
            continue
        else:
            logging.info("%s %s: downloading %s -> %s", model.kind, model.name, url, path)
            try:
                models.download(url, path, args.base_url)
            except HubModelError as e:
                raise HubModelError(f"{model.kind} model {model.name!r}: {e}") from None
        if not args.check:
            print(f"{model.kind} {model.name}: {path} ({human(path.stat().st_size)})", flush=True)
        if not args.check and args.load:
            load_once(model)
            logging.info("%s %s: loaded", model.kind, model.name)
    if not needed:
        logging.info("stages %s need no model", " ".join(map(str, stages)))
    return MISSING if missing else 0


def main(cmd: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    try:
        status = run(args)
    except (HubModelError, ValueError, FileNotFoundError) as e:
        logging.error("%s", error_line(e), exc_info=True if args.log_level == "DEBUG" else None)
        status = MISSING
    except Exception as e:  # a loader's own error (WhisperLoadError, a bad checkpoint naming its file): one line
        logging.error("%s: %s", type(e).__name__, error_line(e, 300), exc_info=True if args.log_level == "DEBUG" else None)
        status = MISSING
    sys.exit(status)


if __name__ == "__main__":
    main()
