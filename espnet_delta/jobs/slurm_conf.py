"""sbatch options from a Kaldi/ESPnet-style ``conf/slurm.conf`` (the format of ``slurm.pl``).

A lab's existing ESPnet ``conf/slurm.conf`` works unchanged::

    command sbatch --export=ALL            # the submit command and options for every job
    option name=* --job-name $0            # (ignored: the back-end names its jobs)
    default time=24:00:00                  # a value used when the caller gives none
    option time=* --time $0                # --time VALUE -> sbatch --time VALUE
    option mem=* --mem-per-cpu $0
    option mem=0                           # --mem 0 adds nothing
    option num_threads=* --cpus-per-task $0
    default gpu=0
    option gpu=0 -p cpu                    # an exact value has its own options
    option gpu=* -p gpu --gres=gpu:$0 -c $0

For every option the caller gives (``--gpu 1``, ``--mem 8G``; cmd.sh) or the file
defaults, an exact ``option key=value`` line wins over ``option key=*`` (with ``$0``
replaced by the value); an option the file does not know is an error naming the file.

Two keys are the back-end's own, not sbatch options (:data:`WAIT_OPTIONS`): ``stuck_after``
(seconds a pending task may wait for nodes that are all down or drained before the stage
stops) and ``pending_log`` (seconds between log lines of unchanged pending reasons). Set them
per run in cmd.sh (``slurm --config conf/slurm.conf --stuck_after 600``) or per site in the
file (``default stuck_after=600``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Dict, List, Optional

#: slurm.pl's built-in configuration, used when no file is given
DEFAULT_CONF = """\
command sbatch --export=ALL
option time=* --time $0
option mem=* --mem-per-cpu $0
option mem=0
option num_threads=* --cpus-per-task $0
option num_threads=1 --cpus-per-task 1
option num_nodes=* --nodes $0
default gpu=0
option gpu=0
option gpu=* --gres=gpu:$0
"""

IGNORED = {"name"}  # the back-end sets --job-name itself

#: the back-end's wait options (seconds) and their defaults; never turned into sbatch options
WAIT_OPTIONS = {"stuck_after": 60.0, "pending_log": 300.0}


class SlurmConfError(ValueError):
    pass


class SlurmConf:
    """The parsed file: the submit command, defaults and option rules."""

    def __init__(self, text: str, source: str = "<default slurm.conf>"):
        self.source = source
        self.command: List[str] = ["sbatch"]
        self.defaults: Dict[str, str] = {}
        self.rules: Dict[str, Dict[str, List[str]]] = {}
        for number, raw in enumerate(text.splitlines(), 1):
            words = shlex.split(raw, comments=True)
            if not words:
                continue
            where = f"{source}:{number}"
            kind, rest = words[0], words[1:]
            if kind == "command":
                if not rest:
                    raise SlurmConfError(f"{where}: 'command' needs the submit command, e.g. 'command sbatch'")
                self.command = rest
            elif kind in ("option", "default"):
                if not rest or "=" not in rest[0]:
                    raise SlurmConfError(f"{where}: expected '{kind} key=value ...', got {raw.strip()!r}")
                key, value = rest[0].split("=", 1)
                if kind == "default":
                    self.defaults[key] = value
                else:
                    self.rules.setdefault(key, {})[value] = rest[1:]
            else:
                raise SlurmConfError(f"{where}: unknown line kind {kind!r} (command, option or default)")

    @classmethod
    def load(cls, path: Optional[str]) -> "SlurmConf":
        if not path:
            return cls(DEFAULT_CONF)
        p = Path(path)
        if not p.is_file():
            raise SlurmConfError(f"slurm config {p} not found (cmd.sh: slurm --config {path})")
        return cls(p.read_text(encoding="utf-8"), str(p))

    def sbatch_options(self, values: Dict[str, str]) -> List[str]:
        """The options for the caller's ``values`` (key -> value) and the file's defaults."""
        merged = {**self.defaults, **{k: str(v) for k, v in values.items() if v is not None}}
        args: List[str] = []
        for key, value in merged.items():
            if key in IGNORED or key in WAIT_OPTIONS:
                continue
            rules = self.rules.get(key)
            if rules is None:
                raise SlurmConfError(f"{self.source}: no 'option {key}=...' line for --{key} {value}")
            if value in rules:
                args += rules[value]
            elif "*" in rules:
                args += [w.replace("$0", value) for w in rules["*"]]
            else:
                raise SlurmConfError(f"{self.source}: no 'option {key}={value}' or 'option {key}=*' line")
        return args

    def wait_options(self, values: Dict[str, str]) -> Dict[str, float]:
        """:data:`WAIT_OPTIONS` from the caller's ``values``, else the file's defaults, else the built-in ones."""
        merged = {**WAIT_OPTIONS, **self.defaults, **{k: v for k, v in values.items() if v is not None}}
        out = {}
        for key in WAIT_OPTIONS:
            try:
                out[key] = float(merged[key])
            except ValueError:
                out[key] = -1.0
            if not out[key] >= 0:
                raise SlurmConfError(f"{self.source}: --{key} must be a number of seconds >= 0, got {merged[key]!r}")
        return out
