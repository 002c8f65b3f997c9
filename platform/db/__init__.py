"""Database access: the embedded or external PostgreSQL, pool and transactions."""
