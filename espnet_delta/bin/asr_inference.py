"""ESPnet's ``asr_inference`` with the plugin registered, so saved delta-fusion models load.

Usage is exactly that of ``python -m espnet2.bin.asr_inference``; the same as
``python -m espnet_delta.launch -m espnet2.bin.asr_inference`` (see :mod:`espnet_delta.launch`).
"""

from espnet_delta import launch

launch.install()


def main(cmd=None) -> None:
    from espnet2.bin.asr_inference import main as espnet_main

    espnet_main(cmd)


if __name__ == "__main__":
    main()
