"""The REST API under /api/v1, generated at request time from the registry."""
