"""Data protection tools: data-subject access, erasure, retention (docs/privacy.md)."""
