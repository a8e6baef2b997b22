"""Postgres adapter: schema (SQLAlchemy models, Alembic), `db check`, and the asyncpg repository."""
