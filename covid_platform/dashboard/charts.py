"""The dashboard's Vega-Altair charts: dates on the x axis, units in the titles, values with thousands separators.

Each chart fits the page's width only (autosize fit-x): its height is the plot's, so a legend or long labels
add to it instead of squeezing the plot (Streamlit's default fits titles, axes and legend into the height).
"""

import altair as alt
import pandas as pd

DAILY, AVERAGE = "Reported that day", "7-day average"
SERIES = alt.Scale(domain=[DAILY, AVERAGE], range=["#a6c8e6", "#1f4e79"])
# Up to this many days, a tick a day; longer, ticks at least a day apart. Vega would otherwise tick a short
# range every few hours, each tick labelled with its date.
DAILY_TICKS_UP_TO = 14
DAY_MS = 86_400_000
HEIGHT = 260
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")


def _date(frame: pd.DataFrame) -> alt.X:
    """The x axis of dates, no date labelled twice."""
    short = frame.empty or frame["date"].max() - frame["date"].min() <= pd.Timedelta(days=DAILY_TICKS_UP_TO)
    ticks = {"tickCount": {"interval": "day", "step": 1}} if short else {"tickMinStep": DAY_MS}
    axis = alt.Axis(format="%b %d, %Y", labelAngle=0, labelOverlap=True, **ticks)
    return alt.X("date:T", title="Date", axis=axis)


def _finish(chart, title: str, height) -> alt.TopLevelMixin:
    return chart.properties(title=alt.Title(title, anchor="start", offset=12), height=height, autosize=FIT_WIDTH)


def daily(frame: pd.DataFrame, column: str, title: str) -> alt.LayerChart:
    """Bars of a daily difference (revisions may be negative) under the line of its 7-day average."""
    long = frame.melt(id_vars="date", value_vars=[column, f"{column}_7d"], var_name="series", value_name="value")
    long["series"] = long["series"].map({column: DAILY, f"{column}_7d": AVERAGE})
    encoding = {
        "x": _date(frame),
        "y": alt.Y("value:Q", title="people per day", axis=alt.Axis(format=",.0f")),
        "color": alt.Color("series:N", scale=SERIES, legend=alt.Legend(title=None, orient="top")),
        "tooltip": [alt.Tooltip("date:T", title="Date", format="%Y-%m-%d"), alt.Tooltip("series:N", title=""),
                    alt.Tooltip("value:Q", title=title, format=",.0f")],
    }
    bars = alt.Chart(long[long["series"] == DAILY]).mark_bar().encode(**encoding)
    line = alt.Chart(long[long["series"] == AVERAGE]).mark_line(strokeWidth=2.5).encode(**encoding)
    return _finish(bars + line, title, HEIGHT)


def over_time(frame: pd.DataFrame, column: str, title: str, unit: str, number_format: str,
              by: str | None = None) -> alt.Chart:
    """A line per `by` value (or one line) of `column` by date."""
    # counts of people: no tick between two whole numbers
    whole = {"tickMinStep": 1} if number_format.endswith("0f") else {}
    encoding = {
        "x": _date(frame),
        "y": alt.Y(f"{column}:Q", title=unit, axis=alt.Axis(format=number_format, **whole)),
        "tooltip": [alt.Tooltip("date:T", title="Date", format="%Y-%m-%d"),
                    alt.Tooltip(f"{column}:Q", title=title, format=number_format)],
    }
    if by:
        encoding["color"] = alt.Color(f"{by}:N", title=None, legend=alt.Legend(orient="top", columns=3,
                                                                               labelLimit=300))
        encoding["tooltip"].insert(0, alt.Tooltip(f"{by}:N"))
    return _finish(alt.Chart(frame).mark_line(point=True).encode(**encoding), title, HEIGHT)


def ranked(frame: pd.DataFrame, label: str, column: str, title: str, unit: str) -> alt.LayerChart:
    """Horizontal bars, largest first, with the value printed at each bar's end."""
    y = alt.Y(f"{label}:N", title=None, sort="-x", axis=alt.Axis(labelLimit=280))
    x = alt.X(f"{column}:Q", title=unit, axis=alt.Axis(format=",.0f"))
    bars = alt.Chart(frame).mark_bar(color="#1f4e79").encode(
        x=x, y=y, tooltip=[alt.Tooltip(f"{label}:N"), alt.Tooltip(f"{column}:Q", title=title, format=",.1f")]
    )
    values = bars.mark_text(align="left", dx=4, color="#333").encode(text=alt.Text(f"{column}:Q", format=",.0f"))
    return _finish(bars + values, title, alt.Step(22))
