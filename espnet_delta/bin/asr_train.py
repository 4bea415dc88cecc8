"""ESPnet's ``asr_train`` with the plugin registered (``frontend: delta_fusion``, ``encoder: identity``).

Usage is exactly that of ``python -m espnet2.bin.asr_train``; the same as
``python -m espnet_delta.launch -m espnet2.bin.asr_train`` (see :mod:`espnet_delta.launch`),
kept as a function for in-process callers (``espnet_delta.recipe.train_jobs``, tests).
"""

from espnet_delta import launch

launch.install()  # also in multiprocessing "spawn" workers, which re-import this module


def main(cmd=None) -> None:
    from espnet2.bin.asr_train import main as espnet_main

    espnet_main(cmd)


if __name__ == "__main__":
    main()
