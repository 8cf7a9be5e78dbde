"""A database password never leaves a command: not in a log line, not in a printed error or traceback.

libpq echoes a URL's password when it holds a ``%`` not followed by two hex digits (``invalid
percent-encoded token: "<password>"``). These tests give a real role such a password and run the commands
as an operator would, with the password written into ``DATABASE_URL`` unencoded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Role:
    """A login role of this test alone, with a password libpq cannot read raw from a URL."""

    name: str
    password: str
    server_url: str = field(repr=False)
    schema_url: str = field(repr=False)

    def url(self, password: str) -> str:
        """The test schema's URL, logged in as this role with ``password`` written into it as given."""
        parts = urlsplit(self.schema_url)
        netloc = f"{self.name}:{password}@{parts.hostname}:{parts.port or 5432}"
        return urlunsplit(parts._replace(netloc=netloc))


def _as_cluster_admin(server_url: str, statements: list[sql.Composable]) -> None:
    """Run ``statements`` as a role allowed to create roles: the test's own, else the local superuser."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        may_create = conn.execute("SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user")
        row = may_create.fetchone()
        if row is not None and row[0]:
            for statement in statements:
                conn.execute(statement)
            return
        text = ";\n".join(statement.as_string(conn) for statement in statements) + ";"
    runuser = shutil.which("runuser")
    if os.geteuid() != 0 or runuser is None:
        pytest.fail("creating a throwaway role needs a DATABASE_URL role with CREATEROLE, or root on the "
                    "PostgreSQL host (runuser -u postgres)", pytrace=False)
    port = str(urlsplit(server_url).port or 5432)
    done = subprocess.run([runuser, "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                           "-p", port, "-d", urlsplit(server_url).path.lstrip("/")],
                          input=text, text=True, cwd="/", capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def role(postgres_server_url: str, database_url: str) -> Iterator[Role]:
    """A throwaway login role that may use this test's schema; dropped afterwards."""
    name = f"t_role_{uuid.uuid4().hex[:10]}"
    password = f"Pw%zz{uuid.uuid4().hex[:12]}%Q"  # "%zz" and "%Q" are no percent-encoding
    schema = dict(parse_qsl(urlsplit(database_url).query))["options"].removeprefix("-csearch_path=")
    _as_cluster_admin(postgres_server_url, [
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)),
        sql.SQL("GRANT ALL ON SCHEMA {} TO {}").format(sql.Identifier(schema),
                                                      sql.Identifier(name)),
    ])
    try:
        yield Role(name, password, postgres_server_url, database_url)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        _as_cluster_admin(postgres_server_url, [
            sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)),
        ])


def run_command(*args: str, database_url: str, timeout: float = 60,
                **more_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "HEALTH_PORT": "0", "LOG_LEVEL": "INFO", **more_env}
    return subprocess.run([sys.executable, "-m", "workers", *args], check=False, cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_the_role_logs_in_with_its_password_percent_encoded(role: Role) -> None:
    done = run_command("migrate", database_url=role.url(quote(role.password, safe="")))
    assert done.returncode == 0, done.stderr


def test_the_password_given_apart_logs_in_as_it_is(role: Role) -> None:
    url = role.url("").replace(":@", "@")  # no password in the URL
    done = run_command("migrate", database_url=url, DATABASE_PASSWORD=role.password)
    assert done.returncode == 0, done.stderr
    assert role.password not in done.stdout + done.stderr


@pytest.mark.parametrize("command", [["migrate"], ["demo", "--headless", "--orders", "1"], ["order-consumer"],
                                     ["instrument-sync", "--once"]])
def test_a_password_libpq_cannot_parse_is_masked_in_every_output(role: Role, command: list[str]) -> None:
    done = run_command(*command, database_url=role.url(role.password))
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert role.password not in output and "zz" not in output.replace(role.name, ""), output
    assert "Traceback" not in output
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ibkr-workers {command[0]}: ") and "DATABASE_URL" in last, output
    if command[0] == "order-consumer":  # the pool logged its connection errors, masked
        assert "invalid percent-encoded token" in done.stderr and "**********" in done.stderr


def test_a_refused_login_names_the_setting_and_shows_no_password(role: Role) -> None:
    wrong = "Wrong" + role.password.replace("%", "%25")[5:]
    done = run_command("migrate", database_url=role.url(wrong))
    output = done.stdout + done.stderr
    assert done.returncode == 3 and "password authentication failed" in output, output
    assert wrong not in output and "Traceback" not in output
