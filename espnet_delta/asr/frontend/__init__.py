"""ESPnet frontends of the plugin, one module per registry key (`frontend: <key>`)."""
