"""What every command shares: one parser style, boolean and log-level options, one log format.

Commands (``espnet_delta.bin.*`` and the planner's ``espnet_delta.recipe.*`` entry points)
follow espnet2's layout: ``get_parser()`` builds the parser with :func:`new_parser` and
``main(cmd=None)`` parses ``cmd`` (a list; ``None`` = ``sys.argv[1:]``), so tests call
commands in-process. Booleans go through espnet2's ``str2bool``, as ESPnet's shell
scripts pass them. This module sits at the bottom of the import order (library code
uses :data:`LOG_FORMAT`), so it imports nothing of the package.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from espnet2.utils.types import str2bool  # noqa: F401  (re-exported for benchmarks and tests)

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"  # ESPnet's
LOG_LEVELS = ("ERROR", "WARNING", "INFO", "DEBUG")


def new_parser(description: Optional[str], option_file: bool = False, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every command: the module docstring as written above the options.

    ``option_file``: espnet2's parser, whose ``--config FILE`` reads option values from a
    YAML file (keys are option names, the command line wins), for commands whose own
    ``--config`` is not an input of theirs (extract_features and init_state read one).
    """
    if option_file:
        from espnet2.utils.config_argparse import ArgumentParser

        return ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def setup_logging(level="INFO") -> None:
    """One log format for every entry point, so the recipe's logs read alike; with
    ``$ESPNET_DELTA_USAGE_LOG`` set, the process's usage line is appended at exit."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    if os.environ.get(USAGE_LOG_ENV):
        register_usage()


# Usage records (the dry run's measurements, docs/dry_run.md): every command that calls
# setup_logging appends one JSON line to $ESPNET_DELTA_USAGE_LOG when it exits; the training
# entry (espnet_delta/asr/train.py) appends one more per ESPnet training with its step rate.
USAGE_LOG_ENV = "ESPNET_DELTA_USAGE_LOG"
USAGE_STAGE_ENV = "ESPNET_DELTA_STAGE"
_usage: Dict[str, Any] = {"registered": False, "params": []}


def _process_start() -> float:
    """The process's start time (epoch seconds; /proc on Linux, else now), so imports count."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def _count_loaded(module, *args, **kwargs):
    out = _usage["load_state_dict"](module, *args, **kwargs)
    _usage["params"].append(sum(p.numel() for p in module.parameters()))
    return out


def register_usage() -> None:
    """Append this process's usage line at exit; count the parameters of every module that
    loads a state dict (the checkpoints a command builds: upstreams, ESPnet models, Whisper)."""
    if _usage["registered"]:
        return
    _usage.update(registered=True, start=_process_start())
    if "torch" in sys.modules:
        _patch_torch(sys.modules["torch"])
    else:  # patched when the command imports torch (a planner call never pays the import)
        sys.meta_path.insert(0, _TorchImportHook())
    atexit.register(lambda: append_usage(usage_record()))


def _patch_torch(torch) -> None:
    if "load_state_dict" not in _usage:
        _usage["load_state_dict"] = torch.nn.Module.load_state_dict
        torch.nn.Module.load_state_dict = _count_loaded


class _TorchImportHook:
    """A meta-path finder that patches torch right after its first import, then removes itself."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def exec_and_patch(module):
                exec_module(module)
                _patch_torch(module)

            spec.loader.exec_module = exec_and_patch
        return spec


def peak_gpu_bytes() -> Optional[int]:
    """torch.cuda.max_memory_allocated where this process used CUDA, else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.max_memory_allocated())


def gpu_name() -> Optional[str]:
    torch = sys.modules.get("torch")
    if peak_gpu_bytes() is None:
        return None
    return str(torch.cuda.get_device_name())


def usage_record(**extra) -> Dict[str, Any]:
    """stage, command, wall seconds, peak RSS (self, children; MiB), peak GPU bytes, parameters."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    command = spec.name if spec is not None else Path(sys.argv[0]).name
    launched = os.environ.get("ESPNET_DELTA_LAUNCH_MAIN", "")  # espnet_delta.launch's target (launch.MAIN_ENV)
    if command == "espnet_delta.launch" and launched.startswith("module:"):
        command = launched[len("module:"):]
    params = _usage["params"]
    record = {
        "stage": os.environ.get(USAGE_STAGE_ENV, ""),
        "command": command,
        "wall_s": round(time.time() - _usage.get("start", _process_start()), 3),
        "rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "children_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "gpu_bytes": peak_gpu_bytes(),
        "device": gpu_name(),
        "params": max(params) if params else None,
        "models_loaded": len(params),
    }
    record.update(extra)
    return record


def append_usage(record: Dict[str, Any]) -> None:
    """One JSON line appended to $ESPNET_DELTA_USAGE_LOG (one write: lines of parallel jobs stay whole)."""
    path = os.environ.get(USAGE_LOG_ENV)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:
        logging.warning("usage log %s: %s", path, e)


def add_bool_argument(parser, *names: str, default: bool = False, help: str = "", **kwargs) -> argparse.Action:
    """A boolean option: ``--name`` alone means true, ``--name true|false`` as ESPnet's
    shell scripts pass booleans (``str2bool``: true/false, yes/no, 1/0)."""
    return parser.add_argument(*names, type=str2bool, nargs="?", const=True, default=default, help=help, **kwargs)


def add_log_level_argument(parser) -> argparse.Action:
    return parser.add_argument("--log_level", default="INFO", choices=LOG_LEVELS, help="logging level")


def add_test_set_argument(parser, what: str = "wav.scp or feats.scp") -> argparse.Action:
    """Repeatable ``--test NAME=SCP`` (read back with :func:`parse_test_sets`)."""
    return parser.add_argument("--test", action="append", default=None, metavar="NAME=SCP",
                               help=f"test set name and its {what} (repeatable; required)")


def parse_test_sets(parser, items: Optional[Sequence[str]]) -> List[Tuple[str, Path]]:
    """``[(name, Path)]`` from repeated ``--test NAME=SCP`` options; a parser error when one is
    missing, malformed or names no existing file (decode, beam_decode, gate_means share it)."""
    if not items:
        parser.error("--test NAME=SCP is required")
    tests = []
    for item in items:
        name, sep, scp = item.partition("=")
        if not sep or not Path(scp).is_file():
            parser.error(f"--test expects NAME=SCP with an existing file, got {item!r}")
        tests.append((name, Path(scp)))
    return tests
