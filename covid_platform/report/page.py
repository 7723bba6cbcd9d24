"""The report as one self-contained HTML page: styles inline, charts as SVG images in data URIs (the
dashboard's Vega-Altair charts, rendered by vl-convert without a browser or network), no script, no font or
stylesheet fetched: it reads the same from S3, a mail attachment or a file on disk.

Every value shown is escaped; links are relative to the page, so a copied report folder keeps working.
"""

import base64
import datetime as dt
import html
import math
from dataclasses import dataclass

import altair as alt
import pandas as pd
import vl_convert

from covid_platform.dashboard import charts
from covid_platform.engine import ledger
from covid_platform.report.changes import Changes
from covid_platform.report.figures import (
    NATIONAL,
    STATES,
    STATUS_COUNTS,
    TESTING,
    TESTING_SUMMARY,
    TOP_STATES,
    Figures,
)

CHART_WIDTH = 880
CHART_DAYS = 180  # the daily charts show the last 180 days: a daily report is read for the recent trend
TESTING_ROWS = 10
# A 7-day positivity of 100%: every test counted is a positive, as for a state whose negative results stopped
# while its positives went on (Puerto Rico from May 2020); above 100%, positives rose more than tests.
ALL_POSITIVE = "every test of these 7 days a positive: negative results not reported"
ABOVE_ALL = "more new positives than new tests: one of them revised, not a measured positivity"
REVISIONS_LISTED = 20
LABELS = {"cases": "cases to date", "deaths": "deaths to date", "new_cases": "new cases",
          "new_deaths": "new deaths"}


def number(value, decimals: int = 0) -> str:
    """1234567.8 → '1,234,568'; a missing value → '–'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{decimals}f}"


def percent(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def _time(iso: str) -> str:
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _plural(items, noun: str) -> str:
    return f"{len(items):,} {noun}{'' if len(items) == 1 else 's'}"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


# --- charts -------------------------------------------------------------------------------------------


def svg(chart: alt.TopLevelMixin) -> str:
    # Vega's 10-11 px defaults are made for a dashboard's tooltips; a printed page has none.
    chart = (chart.configure_axis(labelFontSize=12, titleFontSize=12).configure_legend(labelFontSize=12)
             .configure_title(fontSize=15))
    return vl_convert.vegalite_to_svg(chart.to_dict())


def data_uri(svg_text: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg_text.encode()).decode()


def render_charts(figures: Figures) -> dict[str, str]:
    """name → SVG: the national new cases and deaths per day with their 7-day averages, the top states."""
    found = {}
    if figures.national:
        frame = pd.DataFrame(figures.national)
        frame["date"] = pd.to_datetime(frame["date"])
        # As on the dashboard: a series' first date carries every case reported up to it, and the averages
        # of the 6 dates after it include that; a chart from the series' first date leaves that week out.
        shown = frame.iloc[7:] if len(frame) > 7 else frame
        shown = shown.iloc[-CHART_DAYS:]
        for column, title in (("new_cases", "New cases per day (people)"),
                              ("new_deaths", "New deaths per day (people)")):
            found[column] = svg(charts.daily(shown, column, title).properties(width=CHART_WIDTH))
    if figures.top_states:
        frame = pd.DataFrame(figures.top_states)
        found["top_states"] = svg(charts.ranked(
            frame, "state", "new_cases_7d", "New cases per day, 7-day average, by state",
            "people per day (7-day average)").properties(width=CHART_WIDTH))
    return found


# --- page ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where a copy of the page sits in the site: `root` is the relative path from it to the site's root
    ("../../" from daily/<day>/, "../" from latest/)."""
    root: str
    permanent_key: str | None
    """This report's own page under daily/ (for the 'permanent link' line); None when it has none."""


STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1d1d1f; margin: 0; background: #f4f5f7; }
main { max-width: 940px; margin: 0 auto; padding: 24px 20px 40px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.lead { color: #555; margin: 0 0 18px; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.figure { border: 1px solid #d8dde3; border-radius: 6px; padding: 8px 14px; min-width: 150px; }
.figure .label { font-size: 12px; color: #555; text-transform: uppercase; letter-spacing: .03em; }
.figure .value { font-size: 24px; font-weight: 600; }
.figure .delta { font-size: 12px; color: #555; }
.up { color: #b3261e; } .down { color: #1b7a3a; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; font-size: 14px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e4e7eb; text-align: left; }
th { background: #f0f2f5; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
img.chart { display: block; max-width: 100%; height: auto; margin: 12px 0; }
.note { color: #555; font-size: 13px; } .empty { color: #555; font-style: italic; }
ul.changes li { margin: 2px 0; }
footer { margin-top: 32px; color: #555; font-size: 13px; border-top: 1px solid #ddd; padding-top: 8px; }
"""


def _table(headers: list[tuple[str, bool]], rows: list[list[str]]) -> str:
    """headers: (title, numeric); cells are escaped here."""
    def cell(tag: str, text: str, numeric: bool) -> str:
        return f'<{tag} class="n">{_e(text)}</{tag}>' if numeric else f"<{tag}>{_e(text)}</{tag}>"

    head = "".join(cell("th", title, numeric) for title, numeric in headers)
    body = "".join(
        "<tr>" + "".join(cell("td", text, numeric) for text, (_, numeric) in zip(row, headers)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(name: str, label: str, value: str, delta: str = "") -> str:
    return (f'<div class="figure"><div class="label">{_e(label)}</div>'
            f'<div class="value" id="{name}">{_e(value)}</div>{delta}</div>')


def _no_data(table: str, dataset: str) -> str:
    return (f'<p class="empty">No data yet: <code>covid.{_e(table)}</code> fills when a <code>{_e(dataset)}'
            f"</code> file is loaded.</p>")


def _headline(figures: Figures) -> str:
    latest = figures.latest
    if latest is None:
        return _no_data(NATIONAL, "us_states")
    a_week_before = (dt.date.fromisoformat(latest["date"]) - dt.timedelta(days=7)).isoformat()
    week_before = next((r for r in figures.national if r["date"] == a_week_before), None)

    def delta(column: str) -> str:
        if week_before is None or latest[column] is None or week_before[column] is None:
            return ""
        change = latest[column] - week_before[column]
        trend = "up" if change > 0 else "down" if change < 0 else ""
        sign = "+" if change > 0 else ""
        return f'<div class="delta {trend}">{sign}{_e(number(change))} since 7 days before</div>'

    return '<div class="figures">' + "".join((
        _figure("latest_date", "Latest date", latest["date"]),
        _figure("new_cases_7d", "New cases, 7-day average", number(latest["new_cases_7d"]),
                delta("new_cases_7d")),
        _figure("new_deaths_7d", "New deaths, 7-day average", number(latest["new_deaths_7d"]),
                delta("new_deaths_7d")),
        _figure("new_cases", "New cases that day", number(latest["new_cases"])),
        _figure("new_deaths", "New deaths that day", number(latest["new_deaths"])),
        _figure("cases", "Cases to date", number(latest["cases"])),
        _figure("deaths", "Deaths to date", number(latest["deaths"])),
    )) + "</div>"


def _changes(changes: Changes, day: str, place: Place, replaced: Changes | None) -> str:
    text = ""
    if replaced is not None:
        text = (f'<p class="note">This report replaces the report of {_e(day)} built '
                f"{_e(_time(replaced.previous_built_at))}; since that one: {_e(replaced.summary())}.</p>")
    if changes.first:
        return text + '<p class="empty">The first report: there is no earlier one to compare with.</p>'
    # the previous report of the same date is the page this one replaces: nothing to link to
    previous = (f"the previous report of {_e(day)}, which this one replaces" if changes.previous_day == day
                else f'<a href="{_e(place.root)}daily/{_e(changes.previous_day)}/index.html">the report of '
                     f"{_e(changes.previous_day)}</a>")
    built = f", built {_e(_time(changes.previous_built_at))}" if changes.previous_built_at else ""
    items = []
    if changes.new_dates:
        items.append(f"New dates: {_e(_spans(changes.new_dates))}.")
    if changes.removed_dates:
        items.append(f"No longer in the data: {_e(_spans(changes.removed_dates))}.")
    if changes.revisions:
        items.append(f"{_plural(changes.revisions, 'revised value')} on dates the previous report already "
                     "had (a later file replaced a state's counts):")
    low, high = changes.testing_latest
    if changes.testing_newer or changes.testing_revised:
        items.append(f"Testing: latest date {_e(high or '–')} (was {_e(low or 'none')}); newer figures for "
                     f"{_e(', '.join(changes.testing_newer) or 'no state')}; revised for "
                     f"{_e(', '.join(changes.testing_revised) or 'no state')}.")
    if not items:
        items.append("The national series and testing are as before; only the top states' figures changed.")
    text += f"<p>Compared with {previous}{built}:</p><ul class=\"changes\">" + "".join(
        f"<li>{item}</li>" for item in items) + "</ul>"
    if changes.revisions:
        shown = changes.revisions[:REVISIONS_LISTED]
        text += _table([("date", False), ("value", False), ("before", True), ("now", True)],
                       [[r.date, LABELS[r.column], number(r.before), number(r.after)] for r in shown])
        if len(changes.revisions) > len(shown):
            text += f'<p class="note">…and {len(changes.revisions) - len(shown):,} more.</p>'
    return text


def _spans(days: list[str], shown: int = 10) -> str:
    """Sorted dates as runs of consecutive days ("2020-01-21 to 2023-03-23 (1,158 dates)"), the first `shown`
    runs of them."""
    runs: list[list[dt.date]] = []
    for day in map(dt.date.fromisoformat, days):
        if runs and day - runs[-1][-1] == dt.timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    text = ", ".join(f"{run[0]}" if len(run) == 1 else f"{run[0]} to {run[-1]}" for run in runs[:shown])
    hidden = len(runs) - shown
    more = f" and {hidden:,} more run{'' if hidden == 1 else 's'}" if hidden > 0 else ""
    return text + more + (f" ({len(days):,} dates)" if len(days) > 1 else "")


def _states(figures: Figures, images: dict[str, str]) -> str:
    if not figures.top_states:
        return _no_data(STATES, "us_states")
    day = figures.top_states[0]["date"]
    rows = [[r["state"], number(r["new_cases_7d"]), number(r["new_cases"]), number(r["new_deaths_7d"], 1),
             number(r["cases"]), _as_of(number(r["deaths"]), r.get("deaths_date"))] for r in figures.top_states]
    headers = [("state", False), ("new cases, 7-day avg", True), ("new cases that day", True),
               ("new deaths, 7-day avg", True), ("cases to date", True), ("deaths to date", True)]
    return (f'<p class="note">On {_e(day)}, by the 7-day average of new cases (people per day).</p>'
            + _image(images, "top_states", "Top states by 7-day average of new cases")
            + _table(headers, rows))


def _as_of(value: str, day: str | None) -> str:
    """A count not reported on the table's day: its latest reported value, and the day it was."""
    return f"{value} (on {day})" if day else value


def _testing(figures: Figures) -> str:
    if not figures.testing:
        return ('<p class="empty">No testing data: <code>covid.testing_daily</code> has no 7-day positivity '
                "yet (it fills when a <code>covidtracking</code> file is loaded).</p>")
    latest = max(r["date"] for r in figures.testing)
    shown = figures.testing[:TESTING_ROWS]
    rows = [[f"{r['state_name'] or r['state']} ({r['state']})", r["date"],
             percent(r["positivity_7d"]), percent(r["positivity_to_date"]),
             _caveat(r["positivity_7d"])] for r in shown]
    headers = [("state", False), ("date", False), ("7-day positivity", True), ("positivity to date", True),
               ("caveat", False)]
    return (f'<p class="note">Positive tests as a share of tests over the 7 days to each state\'s latest '
            f"date (latest: {_e(latest)}); {_plural(figures.testing, 'state')} with testing data, the "
            f"{len(shown)} highest shown. To date: positive / (positive + negative) on the latest date "
            f"reporting both (<code>covid.{_e(TESTING_SUMMARY)}</code>).</p>" + _table(headers, rows))


def _caveat(positivity: float) -> str:
    return ALL_POSITIVE if positivity == 1 else ABOVE_ALL if positivity > 1 else ""


def _status(figures: Figures, built_at: dt.datetime) -> str:
    if not any(r["last_load"] or r["quarantined"] or r["duplicates"] for r in figures.status):
        return '<p class="empty">No data yet: no file has been loaded.</p>'
    rows = [[r["dataset"], _time(r["last_load"]) if r["last_load"] else "never loaded",
             *(number(r[count]) for count in STATUS_COUNTS)] for r in figures.status]
    headers = [("dataset", False), ("last load", False), ("files loaded", True), ("quarantined", True),
               ("duplicates", True), ("rows loaded", True), ("rows set aside", True)]
    return (f'<p class="note">From the ledger (<code>covid.ingested_files</code>, <code>covid.rejected_rows'
            f"</code>) when this report was built, at {_e(built_at.strftime('%Y-%m-%d %H:%M'))} UTC. A report "
            "is published only when its figures change: files settled since (a duplicate, a quarantined file, "
            "a load that changed no figure) are not counted here. The dashboard's Data status page is "
            f"current. Rows loaded: {_e(ledger.ROWS_LOADED)}</p>" + _table(headers, rows))


def _links(place: Place) -> str:
    latest = f'Latest report: <a href="{_e(place.root)}latest/index.html">latest/index.html</a>.'
    if place.permanent_key is None:
        return latest
    key = _e(place.permanent_key)
    return f'This report: <a href="{_e(place.root)}{key}">{key}</a>. {latest}'


def _image(images: dict[str, str], name: str, alt_text: str) -> str:
    if name not in images:
        return ""
    return f'<img class="chart" alt="{_e(alt_text)}" src="{data_uri(images[name])}">'


def render(figures: Figures, changes: Changes, day: str, built_at: dt.datetime, images: dict[str, str],
           place: Place, replaced: Changes | None = None) -> str:
    """The page for `place`; `images` from render_charts (rendered once for both copies); `replaced`: what
    changed since the report of the same day this one replaces."""
    national = (_image(images, "new_cases", "New cases per day with the 7-day average")
                + _image(images, "new_deaths", "New deaths per day with the 7-day average")
                if figures.national else "")
    span = (f"{figures.national[0]['date']} to {figures.national[-1]['date']}" if figures.national else "")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>COVID-19 daily report, {_e(day)}</title>
<style>{STYLE}</style>
</head>
<body><main>
<h1>COVID-19 in the United States: daily report</h1>
<p class="lead">{f"Data to {_e(day)}" if figures.national or figures.testing else "No data loaded yet"};
built {_e(built_at.strftime('%Y-%m-%d %H:%M'))} UTC.
New cases and deaths are the daily differences of the cumulative counts summed over the states, each with
its latest reported value (The New York Times, <code>covid.{_e(NATIONAL)}</code>); a revision can make them
negative.</p>

<h2>National: latest date</h2>
{_headline(figures)}

<h2>What changed since the previous report</h2>
{_changes(changes, day, place, replaced)}

<h2>National: new cases and deaths per day</h2>
{f'<p class="note">{_e(span)}; the charts show the last {CHART_DAYS} days at most.</p>' if span else ''}
{national or _no_data(NATIONAL, "us_states")}

<h2>The {TOP_STATES} states with the most new cases</h2>
{_states(figures, images)}

<h2>Test positivity</h2>
{_testing(figures)}

<h2>Data status</h2>
{_status(figures, built_at)}

<footer>{_links(place)}
Sources: covid.{_e(NATIONAL)}, covid.{_e(STATES)}, covid.{_e(TESTING)}, covid.{_e(TESTING_SUMMARY)}.</footer>
</main></body>
</html>
"""
