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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

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
        return _option_file_parser()(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    return argparse.ArgumentParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def _option_file_parser() -> type:
    """espnet2's parser, with an option file checked first: a missing file, a folder, bytes that
    are not UTF-8, YAML that does not parse, a top level that is not a mapping, or a list or
    mapping given to a one-value option are one usage line naming the file (espnet2 would end
    in a traceback or set the wrong value)."""
    from espnet2.utils.config_argparse import ArgumentParser

    class OptionFileParser(ArgumentParser):
        def parse_known_args(self, args=None, namespace=None):
            first, _ = argparse.ArgumentParser.parse_known_args(self, args, namespace)
            if first.config is not None:
                self._check_option_file(Path(first.config))
            return super().parse_known_args(args, namespace)

        def _check_option_file(self, path: Path) -> None:
            import yaml

            if not path.is_file():
                self.error(f"--config {path}: " + ("a folder, not a file" if path.is_dir() else "no such file"))
            data = path.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                line = data.count(b"\n", 0, e.start) + 1
                self.error(f"--config {path}:{line}: not valid UTF-8 (byte {data[e.start]:#04x})")
            try:
                options = yaml.safe_load(text)
            except yaml.YAMLError as e:
                self.error(f"--config {path}: {error_line(e)}")
            if not isinstance(options, dict):
                self.error(f"--config {path}: expected a mapping of option names to values")
            actions = {a.dest: a for a in self._actions}
            for key, value in options.items():
                action = actions.get(key)
                if action is not None and action.nargs is None and isinstance(value, (list, dict)):
                    self.error(f"--config {path}: option {key}: expected one value, got {type(value).__name__} {value!r}")

    return OptionFileParser


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


# Bad input ends a command in one ERROR line naming the file and exit status 1 (usage errors:
# argparse's 2); a programming error (TypeError, AttributeError, KeyError in our code) keeps its
# traceback. The project's own error classes are listed by dotted name, so that this module
# imports nothing of the package; a subclass of a listed class counts as listed.
INPUT_ERRORS: Tuple[type, ...] = (ValueError, OSError)  # TableError, UnicodeDecodeError, FileNotFoundError, ...
REPORTED_ERRORS = frozenset({
    "yaml.error.YAMLError",
    "pickle.UnpicklingError",
    "_pickle.UnpicklingError",
    "espnet_delta.ssl.hub.HubModelError",
    "espnet_delta.ssl.upstream.CheckpointMismatchError",
    "espnet_delta.whisper.load.WhisperLoadError",
    "espnet_delta.data.audio.AudioError",
    "espnet_delta.features.layout.LayoutMismatchError",
    "espnet_delta.features.shards.ShardBusyError",
    "espnet_delta.features.extract.FeatureDiskFullError",
    "espnet_delta.scoring.sctk.SctkError",
})


def _torch_load_file(e: BaseException) -> Optional[str]:
    """The file of the ``torch.load`` call ``e`` came out of (a truncated, damaged or foreign
    checkpoint: torch's own messages never name the file), else None."""
    tb = e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "load" and code.co_filename.replace(os.sep, "/").endswith("torch/serialization.py"):
            f = tb.tb_frame.f_locals.get("f")
            return str(f) if isinstance(f, (str, os.PathLike)) else repr(f)
        tb = tb.tb_next
    return None


def is_input_error(e: BaseException) -> bool:
    """Whether a command reports ``e`` in one line (:func:`run_command`) rather than with a traceback."""
    if not isinstance(e, Exception) or isinstance(e, MemoryError):
        return False
    if isinstance(e, INPUT_ERRORS) or _torch_load_file(e) is not None:
        return True
    return any(f"{c.__module__}.{c.__qualname__}" in REPORTED_ERRORS for c in type(e).__mro__)


def error_line(e: BaseException, limit: int = 600) -> str:
    """``e`` as one line: a YAML error's line, column and problem; a damaged checkpoint's file."""
    checkpoint = _torch_load_file(e)
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    if checkpoint is not None and not isinstance(e, OSError):
        why = f"{type(e).__name__}: {first}" if first else type(e).__name__
        return f"{checkpoint}: not a readable torch checkpoint (truncated, damaged or not written by torch.save; {why})"
    problem = getattr(e, "problem", None)
    if problem is not None and type(e).__module__.startswith("yaml"):
        mark = getattr(e, "problem_mark", None)
        name = "" if mark is None or str(mark.name).startswith("<") else f"{mark.name}: "
        where = f"{name}line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        text = f"invalid YAML: {where}{problem}"
    else:
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_command(body: Callable[[], Any], log_level: Optional[str] = None, also: Tuple[type, ...] = (),
                returns_status: bool = False) -> Any:
    """``body()`` (a command's work after its options are parsed), with bad input reported as
    one ERROR line and exit status 1 (:func:`is_input_error`, or one of ``also``: a command's
    own failures, such as extraction's incomplete shards); ``--log_level DEBUG`` (``None``: the
    root logger at DEBUG) adds the traceback. Returns what ``body`` returns; with
    ``returns_status`` (a ``main`` that returns its exit status), 1 rather than ``SystemExit(1)``."""
    try:
        return body()
    except Exception as e:
        if not (is_input_error(e) or isinstance(e, also)):
            raise
        debug = logging.getLogger().isEnabledFor(logging.DEBUG) if log_level is None else log_level == "DEBUG"
        logging.error("%s", error_line(e), exc_info=True if debug else None)
        if returns_status:
            return 1
        sys.exit(1)


def reports_bad_input(main: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates a command's ``main(cmd=None)``: :func:`run_command` around all of it."""
    import functools

    @functools.wraps(main)
    def wrapped(cmd: Optional[Sequence[str]] = None) -> Any:
        return run_command(lambda: main(cmd))

    return wrapped
