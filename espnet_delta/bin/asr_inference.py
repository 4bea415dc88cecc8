"""ESPnet's ``asr_inference`` with the plugin registered, so saved delta-fusion models load."""

from espnet_delta.asr.register import register


def main(cmd=None) -> None:
    register()
    from espnet2.bin.asr_inference import main as espnet_main

    espnet_main(cmd)


if __name__ == "__main__":
    main()
