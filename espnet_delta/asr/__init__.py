"""ESPnet integration: frontends, the identity encoder, the CTC-WER model, registration,
Speech2Text and greedy CTC decoding.

Importing this package installs the launcher's import hooks (:func:`espnet_delta.launch.install`),
so that code using the plugin from Python registers it with ESPnet's ASR task and skips
g2p_en's offline NLTK downloads, as the launcher does for commands.
"""

from espnet_delta import launch as _launch

_launch.install()
