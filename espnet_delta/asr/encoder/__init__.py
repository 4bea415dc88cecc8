"""ESPnet encoders of the plugin, one module per registry key (`encoder: <key>`)."""
