"""Whisper in espnet_delta: loading (hub name or file), tiny local checkpoints, screening transcription.

The ESPnet encoder and decoder built on them live in espnet_delta/asr/{encoder,decoder}/whisper_file.py.
"""
