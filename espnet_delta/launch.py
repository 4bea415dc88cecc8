"""Run a Python command with the plugin registered: a drop-in ``python`` for ESPnet recipes.

    python -m espnet_delta.launch -m espnet2.bin.asr_train --config conf/train.yaml ...
    python -m espnet_delta.launch pyscripts/utils/some_script.py args...
    python -m espnet_delta.launch -c 'code' args...

behave as ``python -m ...``, ``python script.py`` and ``python -c`` do, so a stock ESPnet
recipe runs unchanged with ``./asr.sh --python "python3 -m espnet_delta.launch"``: every
``${python} -m espnet2.bin.X`` it issues then sees ``frontend: delta_fusion``,
``encoder: identity`` and ``model: espnet_ctc_wer``.

ESPnet has no plugin hook, so before the target runs the launcher installs two import
hooks (:func:`install`); commands that never import the ASR task pay nothing:

* after ``espnet2.tasks.asr`` is imported, the plugin's classes are added to its class
  choices (:func:`espnet_delta.asr.register.register`);
* while ``g2p_en`` is imported (ESPnet's phoneme tokenizer imports it with the ASR task),
  ``nltk.download`` is a no-op: g2p_en tries to download its tagger and CMUdict at import
  whenever they are missing, which offline prints eight ``[nltk_data]`` error lines in
  every process. Only ESPnet's ``g2p_en`` tokenizers use them; without them those fail
  at first use with NLTK's own "Resource ... not found" error.

Child processes: ``espnet2.bin.launch`` starts the command after ``--``, i.e. again
``${python} -m espnet2.bin.asr_train``, so the children go through the launcher too.
ESPnet's single-node multi-GPU training starts its workers with multiprocessing's
"spawn", which re-imports the parent's ``__main__`` by its module spec; the target's
``__main__`` therefore keeps this module's spec (its ``__file__``, ``__package__`` and
namespace are the target's), so each worker imports the launcher first, which installs
the hooks and rebuilds the target's namespace there.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.abc
import importlib.util
import logging
import os
import runpy
import sys
import types
from typing import Callable, ContextManager, List, Optional, Sequence

USAGE = """usage: python -m espnet_delta.launch (-m module | -c code | script.py) [args ...]

Runs the module, code or script like python itself, with the espnet_delta plugin
registered in ESPnet's ASR task. In an ESPnet recipe: ./asr.sh --python "python3 -m espnet_delta.launch"
"""

ASR_TASK = "espnet2.tasks.asr"
MAIN_ENV = "ESPNET_DELTA_LAUNCH_MAIN"  # "module:<name>" or "path:<file>", read by spawned workers
HOOK_MARK = "espnet_delta_hook"  # the hooked module's name; marks our finders in sys.meta_path

logger = logging.getLogger(__name__)


class _WrappedLoader(importlib.abc.Loader):
    """A module loader whose ``exec_module`` runs inside ``wrap()``; everything else is the original's."""

    def __init__(self, inner, wrap: Callable[[], ContextManager]):
        self._inner = inner
        self._wrap = wrap

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        with self._wrap():
            self._inner.exec_module(module)

    def __getattr__(self, name):  # get_code, get_source, is_package, ...
        return getattr(self._inner, name)


class _AroundImport(importlib.abc.MetaPathFinder):
    """Finds one module with the other finders and wraps the execution of its code."""

    def __init__(self, name: str, wrap: Callable[[], ContextManager]):
        self.espnet_delta_hook = name
        self._wrap = wrap

    def find_spec(self, fullname, path, target=None):
        if fullname != self.espnet_delta_hook:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _WrappedLoader(spec.loader, self._wrap)
        return spec


@contextlib.contextmanager
def _register_after():
    yield
    from espnet_delta.asr.register import register

    register()


@contextlib.contextmanager
def _without_nltk_downloads():
    try:
        import nltk
    except ImportError:
        yield
        return
    original = nltk.download

    def skip(info_or_id=None, *args, **kwargs) -> bool:
        logger.debug("Not downloading NLTK data %r at import of g2p_en (see espnet_delta.launch)", info_or_id)
        return False

    nltk.download = skip
    try:
        yield
    finally:
        nltk.download = original


def installed_hooks() -> List[str]:
    """Names of the modules hooked in this process (the hooks of any copy of this module)."""
    return [getattr(f, HOOK_MARK) for f in sys.meta_path if isinstance(getattr(f, HOOK_MARK, None), str)]


def install() -> None:
    """Idempotently install the registration and NLTK hooks in this process.

    If ESPnet's ASR task is already imported, the plugin is registered at once.
    """
    present = installed_hooks()
    for name, wrap in ((ASR_TASK, _register_after), ("g2p_en", _without_nltk_downloads)):
        if name not in present:
            sys.meta_path.insert(0, _AroundImport(name, wrap))
    if ASR_TASK in sys.modules:
        from espnet_delta.asr.register import register

        register()


def _launcher_spec():
    return importlib.util.find_spec("espnet_delta.launch")


def _exec_as_main(code, argv: List[str], namespace: dict) -> None:
    """Run ``code`` in a fresh ``__main__`` module (as runpy does), with this module's spec."""
    main = types.ModuleType("__main__")
    main.__dict__.update(namespace, __name__="__main__", __builtins__=builtins, __spec__=_launcher_spec())
    saved_main, saved_argv = sys.modules["__main__"], sys.argv
    sys.modules["__main__"], sys.argv = main, argv
    try:
        exec(code, main.__dict__)
    finally:
        sys.modules["__main__"], sys.argv = saved_main, saved_argv


def run_module(name: str, args: Sequence[str]) -> None:
    """``python -m name args...``; a package runs its ``__main__`` submodule."""
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.submodule_search_locations is not None:
        name = f"{name}.__main__"
        spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or not hasattr(spec.loader, "get_code"):
        raise SystemExit(f"espnet_delta.launch: No module named {name} (or it has no code to run)")
    code = spec.loader.get_code(name)
    os.environ[MAIN_ENV] = f"module:{name}"
    _exec_as_main(code, [spec.origin, *args], dict(
        __file__=spec.origin, __cached__=spec.cached, __loader__=spec.loader, __package__=spec.parent))


def run_path(path: str, args: Sequence[str]) -> None:
    """``python path args...``: sys.path[0] becomes the script's directory."""
    if not os.path.isfile(path):
        if os.path.exists(path):  # a directory or zip file with __main__.py
            sys.argv = [path, *args]
            runpy.run_path(path, run_name="__main__")
            return
        raise SystemExit(f"espnet_delta.launch: can't open file {path!r}: no such file")
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    os.environ[MAIN_ENV] = f"path:{os.path.abspath(path)}"
    _exec_as_main(code, [path, *args], dict(__file__=path, __cached__=None, __package__=None))


def run_code(source: str, args: Sequence[str]) -> None:
    """``python -c source args...``."""
    os.environ.pop(MAIN_ENV, None)
    _exec_as_main(compile(source, "<string>", "exec"), ["-c", *args], {})


def _rebuild_main_in_spawned_worker(namespace: dict) -> None:
    """In a multiprocessing "spawn" worker of a launched command: hooks, then the target's names."""
    install()
    kind, _, target = os.environ.get(MAIN_ENV, "").partition(":")
    if kind == "module":
        content = runpy.run_module(target, run_name="__mp_main__")
    elif kind == "path":
        content = runpy.run_path(target, run_name="__mp_main__")
    else:
        return
    namespace.update({k: v for k, v in content.items() if not (k.startswith("__") and k.endswith("__"))})


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        sys.stderr.write(USAGE)
        raise SystemExit(2)
    if argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        raise SystemExit(0)
    install()
    first, rest = argv[0], argv[1:]
    if first in ("-m", "-c"):
        if not rest:
            sys.stderr.write(f"espnet_delta.launch: argument expected for the {first} option\n{USAGE}")
            raise SystemExit(2)
        (run_module if first == "-m" else run_code)(rest[0], rest[1:])
    elif first.startswith("-"):
        sys.stderr.write(f"espnet_delta.launch: unknown option {first}\n{USAGE}")
        raise SystemExit(2)
    else:
        run_path(first, rest)


if __name__ == "__main__":
    main()
elif __name__ == "__mp_main__":
    _rebuild_main_in_spawned_worker(globals())
