"""xrm's built-in plugins (package xrm.builtins, folder plugins/builtins/).

Each subpackage is one plugin, registered in xrm's pyproject.toml under the
entry-point group `xrm.plugins` — the same path a third-party plugin takes
(docs/plugins.md).
"""
