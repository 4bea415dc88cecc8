"""ESPnet's ASR training (``espnet2.bin.asr_train``) with the plugin registered.

:func:`train` takes exactly the options of ``python -m espnet2.bin.asr_train``; the
job runner (:mod:`espnet_delta.recipe.train_jobs`) calls it in-process, the command
:mod:`espnet_delta.bin.asr_train` wraps it. Importing this module installs the
registration hooks of :mod:`espnet_delta.launch` (``frontend: delta_fusion``,
``encoder: identity``, ``model: espnet_ctc_wer``, ...), also in multiprocessing "spawn"
workers, which re-import the modules their target came from.
"""

from __future__ import annotations

from typing import Optional, Sequence

from espnet_delta import launch

launch.install()


def import_task() -> None:
    """Import ESPnet's ASR task now (~13 s, with the plugin registered), e.g. in a parent
    process whose forked children then train without paying it again."""
    import espnet2.tasks.asr  # noqa: F401


def train(cmd: Optional[Sequence[str]] = None) -> None:
    """``espnet2.bin.asr_train.main(cmd)``; ``None`` reads ``sys.argv``."""
    from espnet2.bin.asr_train import main as espnet_main

    espnet_main(None if cmd is None else list(cmd))
