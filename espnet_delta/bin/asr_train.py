"""ESPnet's ``asr_train`` with the plugin registered (``frontend: delta_fusion``, ``encoder: identity``).

Usage is exactly that of ``python -m espnet2.bin.asr_train``; the same as
``python -m espnet_delta.launch -m espnet2.bin.asr_train`` (see :mod:`espnet_delta.launch`).
The library side is :func:`espnet_delta.asr.train.train`.
"""

from espnet_delta.asr.train import train  # installs the hooks, also in "spawn" workers re-importing this module


def main(cmd=None) -> None:
    train(cmd)


if __name__ == "__main__":
    main()
