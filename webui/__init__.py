"""Server-rendered web UI (Jinja2 templates; HTMX arrives with the UI work)."""
