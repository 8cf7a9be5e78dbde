"""One line for a PostgreSQL failure, fit for an operator's terminal."""

from __future__ import annotations

from workers.logs import mask_secrets

# What the entrypoints catch: any psycopg error (a bad DATABASE_URL raises ProgrammingError before
# connecting, a refused login OperationalError) and the pool giving up.
DATABASE_SETTING = "DATABASE_URL"


def describe_database_error(exc: BaseException) -> str:
    """The first line of ``exc``'s message, secrets masked, naming the setting to check."""
    lines = str(exc).strip().splitlines()
    detail = lines[0] if lines else type(exc).__name__
    return mask_secrets(f"PostgreSQL failed ({type(exc).__name__}; check {DATABASE_SETTING}): {detail}")
