"""ESPnet's ``asr_train`` with the plugin registered (``frontend: delta_fusion``, ``encoder: identity``).

Usage is exactly that of ``python -m espnet2.bin.asr_train``; a stock ESPnet recipe
uses it with ``asr.sh --python "python -m espnet_delta.bin.asr_train"``-style
wrappers or by calling it in place of espnet2.bin.asr_train.
"""

from espnet_delta.asr.register import register


def main(cmd=None) -> None:
    register()
    from espnet2.bin.asr_train import main as espnet_main

    espnet_main(cmd)


if __name__ == "__main__":
    main()
