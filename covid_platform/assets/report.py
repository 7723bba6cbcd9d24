"""The daily report: a self-contained HTML page built from the summaries, published to REPORTS_URL, with a
notice to readers. Downstream of the tables it reads, so every ingestion run (and replay) of `us_states`
and `covidtracking` ends with it: a load that changed a figure publishes a report, anything else (a
duplicate file, a run again of a loaded partition) publishes nothing and says so in its metadata."""

import datetime as dt
import json

import dagster as dg
from psycopg2.extensions import ISOLATION_LEVEL_REPEATABLE_READ as REPEATABLE_READ

from covid_platform.assets.docs import OWNERS
from covid_platform.assets.policies import RETRY
from covid_platform.report import figures as report_figures
from covid_platform.report import site
from covid_platform.report.changes import compare
from covid_platform.resources.landing import LandingZone
from covid_platform.resources.notifier import Notifier
from covid_platform.resources.warehouse import Warehouse

# Runs of several files finish at once: their reports are built one at a time, each seeing the figures
# the one before it published, so the same figures are never published twice.
LOCK = "covid_platform.daily_report"


@dg.asset(
    name="daily_report",
    deps=list(report_figures.READS),
    group_name="reports",
    owners=OWNERS,
    kinds={"html"},
    retry_policy=RETRY,
    description=(
        "The published daily report: national new cases and deaths with their 7-day averages, the "
        f"{report_figures.TOP_STATES} states with the most new cases, test positivity, what changed since "
        "the previous report and the data status, as one self-contained HTML page at "
        "`<REPORTS_URL>/daily/<latest date>/index.html` and `<REPORTS_URL>/latest/index.html` "
        "(REPORTS_URL unset: `<LANDING_URL>/_reports`). Rebuilt after each load; published only when the "
        "figures it shows changed (their fingerprint), with a notice to REPORT_WEBHOOK_URL / "
        "REPORT_SNS_TOPIC_ARN."
    ),
)
def daily_report(context: dg.AssetExecutionContext, warehouse: Warehouse, landing: LandingZone,
                 notifier: Notifier):
    reports = site.Site.of(landing)
    with warehouse.connect_read() as conn:
        conn.autocommit = True
        with conn.cursor() as cur:  # a session lock, released when the connection closes
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOCK,))
        # The snapshot starts after the lock is held, so it includes what the previous holder saw.
        conn.set_session(isolation_level=REPEATABLE_READ, autocommit=False)
        with conn:
            figures = report_figures.read(conn)
        built_at = dt.datetime.now(dt.timezone.utc)
        fingerprint = figures.fingerprint()
        previous = reports.read_json(site.LATEST_FIGURES)
        if previous is not None and previous["fingerprint"] == fingerprint:
            context.log.info("The report's figures are unchanged since the report of %s: nothing published",
                             previous["day"])
            # Still a materialization (of nothing new): a backfill or a run again of a loaded file must
            # complete with every selected asset reported.
            yield dg.MaterializeResult(metadata={
                "published": False,
                "reason": dg.MetadataValue.text(f"the figures are those of the report of {previous['day']} "
                                                f"(built {previous['built_at']}): nothing published"),
                "report": dg.MetadataValue.url(reports.link(site.LATEST_PAGE)),
                "fingerprint": fingerprint,
            })
            return
        yield _publish(context, reports, notifier, figures, fingerprint, previous, built_at)


def _publish(context: dg.AssetExecutionContext, reports: site.Site, notifier: Notifier,
             figures: report_figures.Figures, fingerprint: str, previous: dict | None,
             built_at: dt.datetime) -> dg.MaterializeResult:
    day = figures.day(built_at)
    from covid_platform.report import page  # altair and pandas: imported by the runs that publish, not by every run

    changes = compare(previous, figures.shown())
    # A report of the day the previous one was of replaces that page: its changes stay those since the report
    # that page compared with (the day before's, `since`), and it says what changed since the page it replaces.
    # (A snapshot of an older version has no `since`: that page's changes stay those since the report it replaces.)
    replaces = previous is not None and previous["day"] == day
    since = previous.get("since", day) if replaces else previous and previous["day"]
    replaced = changes if replaces and since != day else None
    shown = compare(since and reports.read_json(site.daily_figures(since)), figures.shown()) if replaced else changes
    images = page.render_charts(figures)
    day_key = site.daily_page(day)
    # The page of an earlier day is never rewritten: only the day the previous report was of may be
    # replaced (the same data date, revised). A page of this day from an older report (the data's latest
    # date moved back, e.g. after a replay) stays as it was; the new report is then published as latest only.
    keep_day_page = reports.exists(day_key) and not replaces
    permanent = None if keep_day_page else day_key
    snapshot = json.dumps({"day": day, "built_at": built_at.isoformat(timespec="seconds"), "since": since,
                           "fingerprint": fingerprint, "figures": figures.shown()}, sort_keys=True)

    if not keep_day_page:
        day_page = page.render(figures, shown, day, built_at, images, page.Place("../../", day_key), replaced)
        reports.write(day_key, day_page, "text/html")
        reports.write(site.daily_figures(day), snapshot, "application/json")
    reports.write(site.LATEST_PAGE, page.render(figures, shown, day, built_at, images,
                                                page.Place("../", permanent), replaced), "text/html")
    # Written last: the next build compares with it, so a build that failed before here is done again.
    reports.write(site.LATEST_FIGURES, snapshot, "application/json")

    link = reports.link(permanent or site.LATEST_PAGE)
    latest = figures.latest or {}
    notifier.announce(
        f"COVID-19 daily report: data to {day}",
        new_cases_7d=page.number(latest.get("new_cases_7d")) if latest else None,
        new_deaths_7d=page.number(latest.get("new_deaths_7d")) if latest else None,
        changes=changes.summary(),
        report=link,
    )
    context.log.info("Published the report of %s (%s): %s", day, changes.summary(), link)

    metadata = {
        "published": True,
        "latest_date": day,
        "report": dg.MetadataValue.url(link),
        "page_key": permanent or site.LATEST_PAGE,
        "changes": changes.summary(),
        "new_dates": len(changes.new_dates),
        "revised_values": len(changes.revisions),
        "fingerprint": fingerprint,
    }
    for column in ("new_cases_7d", "new_deaths_7d", "new_cases", "new_deaths"):
        if latest.get(column) is not None:
            metadata[column] = dg.MetadataValue.float(float(latest[column]))
    if "new_cases" in images:
        metadata["chart"] = dg.MetadataValue.md(
            f"![New cases per day with the 7-day average]({page.data_uri(images['new_cases'])})")
    if keep_day_page:
        metadata["kept"] = f"{day_key} is an earlier report's page and was left as it was"
    return dg.MaterializeResult(metadata=metadata)
