"""Replay: a dataset's archived files gated again with the gates of the day, in ledger order, after a gate
rule changed or a bug was fixed; the clean table is rebuilt aside from those that pass and swapped in.

The staging and gates are those of a dropped file (`intake`); only the order and the table differ. The
table's lock is held from the first file to the swap: merges of files dropped meanwhile wait, then apply
to the new table.
"""

from dataclasses import dataclass, replace

import psycopg2.extensions
from psycopg2 import sql

from covid_platform.datasets import Dataset, unrouted_reason
from covid_platform.engine import history, ledger, merge, staging
from covid_platform.engine.intake import gate_archived, same_rows, settle
from covid_platform.engine.ledger import Status
from covid_platform.engine.tables import coverage_name, table_ddl
from covid_platform.resources.landing import LandingZone

ASIDE_SUFFIX = "_replay"


@dataclass
class Verdict:
    """One archived file's outcome under the gates of the day."""

    file_id: int
    key: str
    partition_key: str
    before: Status
    """Its ledger status before the replay."""
    status: Status
    """Staged (merged by the replay, then loaded), quarantined or duplicate."""
    reason: str | None
    rows: int | None
    columns: dict | None
    gates: dict
    """Each gate's result under today's rules ({name: {passed, blocking, reason}}, the ledger's `gates`)."""
    duplicate_of: int | None = None
    """For a duplicate: the file whose bytes it repeats (its typed rows kept until that file is merged)."""

    @property
    def after(self) -> Status:
        return Status.LOADED if self.status == Status.STAGED else self.status


def replay(conn: psycopg2.extensions.connection, landing: LandingZone, dataset: Dataset) -> tuple[merge.Merged, list[Verdict]]:
    """Rebuild `covid.<table>` from every archived file of the dataset; readers see the old table until the
    swap commits, then the new one."""
    with ledger.transaction(conn) as cur:
        merge.lock(cur, dataset.table, session=True)
    try:
        verdicts = _regate(conn, landing, dataset)
        built = _aside(dataset)
        with ledger.transaction(conn) as cur:  # the new table, the ledger's verdicts and the swap at once
            cur.execute("SELECT file_id, processed_at FROM covid.ingested_files WHERE file_id = ANY(%s)",
                        ([verdict.file_id for verdict in verdicts],))
            processed_at = dict(cur.fetchall())
            _record(cur, verdicts)
            if any(verdict.status == Status.STAGED for verdict in verdicts):
                # one by one, as they were dropped: the table a fresh load of the same files gives, each
                # duplicate's coverage and issue time recorded as the raw step does, after its file's merge
                merges = []
                for verdict in verdicts:
                    if verdict.status == Status.STAGED:
                        merges.append(merge.merge_files(cur, built, [verdict.file_id]))
                    elif verdict.duplicate_of:
                        merge.cover_as(cur, built, verdict.file_id, verdict.duplicate_of)
                        staging.drop(cur, verdict.file_id)
                merged = _merged(merges)
            else:
                cur.execute(table_ddl(built))
                cur.execute(merge.coverage_ddl(built))
                history.ddl(cur, built)
                merged = merge.Merged(decreases=dict.fromkeys(dataset.new, 0))
            # A file whose verdict is as before keeps the time it was processed: a replay is no new load (a
            # stale dataset stays stale), and a file it loads or quarantines anew is processed now.
            kept = [(v.file_id, processed_at[v.file_id]) for v in verdicts if v.after == v.before]
            cur.execute("UPDATE covid.ingested_files AS f SET processed_at = k.at "
                        "FROM unnest(%s::bigint[], %s::timestamptz[]) AS k(file_id, at) WHERE f.file_id = k.file_id",
                        ([file_id for file_id, _ in kept], [at for _, at in kept]))
            _swap(cur, dataset)
    finally:
        if not conn.closed:
            conn.rollback()
            with ledger.transaction(conn) as cur:
                merge.unlock(cur, dataset.table)
    return merged, verdicts


def _merged(merges: list[merge.Merged]) -> merge.Merged:
    """What the replay's merges did, together."""
    return merge.Merged(
        loaded=[file for m in merges for file in m.loaded],
        rows_in_files=sum(m.rows_in_files for m in merges),
        rows_written=sum(m.rows_written for m in merges),
        keys_changed=sum(m.keys_changed for m in merges),
        first_date=min(m.first_date for m in merges),
        last_date=max(m.last_date for m in merges),
        decreases={count: sum(m.decreases[count] for m in merges) for count in merges[0].decreases},
        revisions={file_id: r for m in merges for file_id, r in m.revisions.items()},
    )


def _aside(dataset: Dataset) -> Dataset:
    """The dataset with its clean table renamed: the table the replay builds, readers never see it."""
    return replace(dataset, table=f"{dataset.table}{ASIDE_SUFFIX}")


def _regate(conn: psycopg2.extensions.connection, landing: LandingZone, dataset: Dataset) -> list[Verdict]:
    """Stage and gate every archived file again; those that pass keep their typed rows for the merge.
    Files in flight (received, staged) are left to their own runs, whose merges follow the swap."""
    verdicts = []
    # the previous file that passed (sha256, (file_id, key)): a file of the same bytes is its duplicate, as
    # `ledger.loaded_with_same_content` finds one
    previous: tuple[str, tuple[int, str]] | None = None
    for file_id, key, etag, partition, before, archive_key in ledger.archived_files(conn, dataset.name):
        if unrouted_reason(key):  # quarantined by `quarantine_unrouted` (not a CSV): no gate reads it
            continue
        ledger.forget_rejected_rows(conn, file_id)  # the rows set aside are today's gates' (none if quarantined)
        gated = gate_archived(conn, landing, dataset, file_id, key, archive_key)
        duplicate_of = same_rows(dataset, key, previous[1]) \
            if previous and not gated.failed and previous[0] == gated.sha256 else None
        status, reason = settle(landing, gated, key, etag, archive_key, duplicate_of)
        with conn, conn.cursor() as cur:  # a duplicate's typed rows kept for `replay`
            staging.drop(cur, file_id, typed=status not in (Status.STAGED, Status.DUPLICATE))
        if status == Status.STAGED:
            previous = (gated.sha256, (file_id, key))
        columns = gated.staged.columns if gated.staged else None
        verdicts.append(Verdict(file_id, key, partition, before, status, reason, gated.rows, columns,
                                ledger.gates_of(gated.gates), duplicate_of and duplicate_of[0]))
    return verdicts


def _record(cur: psycopg2.extensions.cursor, verdicts: list[Verdict]) -> None:
    """Today's verdicts in the ledger, in the caller's transaction (the merge then marks the staged files
    loaded, with the rows each wrote)."""
    for verdict in verdicts:
        fields = {"status": verdict.status, "reason": verdict.reason, "rows": verdict.rows, "gates": verdict.gates}
        if verdict.status == Status.STAGED:
            fields["columns"] = verdict.columns
        else:
            fields["rows_loaded"] = None  # as for a file quarantined or skipped on its first load
        ledger.set_fields(cur, verdict.file_id, **fields)


def _swap(cur: psycopg2.extensions.cursor, dataset: Dataset) -> None:
    """Replace `covid.<table>` by the table built aside, with its indexes and year partitions, in the
    caller's transaction: until it commits readers see the old table, then the new one."""
    aside = _aside(dataset)
    built = aside.table
    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("covid", dataset.table)))
    # the history and coverage rebuilt beside it (`<built>_history`, `<built>_coverage`) replace the
    # table's: renamed below with it
    for beside in (history.history_name(dataset), coverage_name(dataset)):
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("covid", beside)))
    cur.execute(
        """
        SELECT c.relname, c.relkind IN ('i', 'I') FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'covid' AND c.relkind IN ('r', 'p', 'i', 'I') AND left(c.relname, length(%s)) = %s
        """,
        (built, built),
    )
    for name, is_index in cur.fetchall():
        # Renaming the primary key's index renames its constraint too.
        cur.execute(sql.SQL("ALTER {} {} RENAME TO {}").format(
            sql.SQL("INDEX" if is_index else "TABLE"),
            sql.Identifier("covid", name),
            sql.Identifier(dataset.table + name[len(built):]),
        ))
    history.drop_functions(cur, aside)
    history.functions_ddl(cur, dataset)
    history.rename_revisions(cur, built, dataset.table)
