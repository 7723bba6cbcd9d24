"""What the pages share: the no-data notice, a table with its CSV download, number formatting."""

import math
import re

import altair as alt
import pandas as pd
import streamlit as st

from covid_platform.datasets import Dataset


def no_data(dataset: Dataset, table: str | None = None) -> None:
    """Tell what fills the page (the dataset's clean table, or `table` built from it), then end the page's
    script (st.stop): nothing below it has rows."""
    st.info(
        f"No data yet: this page shows `covid.{table or dataset.table}`, which fills when a `{dataset.name}` "
        f"file is dropped into the landing zone (`<LANDING_URL>/{dataset.name}/<name>.csv`)."
    )
    st.stop()


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def number(value, decimals: int = 0) -> str:
    """1234567.8 → '1,234,568'; a value that rounds to zero → '0', never '-0' (-0.4); a missing value →
    '–'."""
    if _missing(value):
        return "–"
    return f"{value:z,.{decimals}f}"


def change(now, before) -> str | None:
    """A metric's delta: `now - before` as `number` writes it ('0' for a change that rounds to zero, which
    Streamlit shows grey, without an arrow); None (no delta shown) when either value is missing."""
    if _missing(now) or _missing(before):
        return None
    return number(now - before)


def day(value: pd.Timestamp) -> str:
    return value.strftime("%Y-%m-%d")


def slug(*parts) -> str:
    """A download's file name from its parts: ("New York", "daily") → "new_york_daily"."""
    return "_".join(re.sub(r"[^a-z0-9-]+", "_", str(part).lower()).strip("_") for part in parts)


def daily_chart_rows(frame: pd.DataFrame, starts_series: bool) -> pd.DataFrame:
    """The rows a per-day chart shows. A series' first date carries everything reported up to it (new_x = x
    there), and the 7-day averages of the 6 dates after it include that: a chart of a series loaded from
    mid-2020 would be one spike. So a chart starting at the series' first date leaves its first week out; the
    tables and figures keep every row."""
    return frame.iloc[7:] if starts_series and len(frame) > 7 else frame


def latest_figures(frame: pd.DataFrame) -> None:
    """The last row of a daily series (national or one state's) as numbers: its date, the 7-day averages of
    new cases and deaths (with their change since 7 days before), and the cumulative counts."""
    latest = frame.iloc[-1]
    week_before = frame[frame["date"] == latest["date"] - pd.Timedelta(days=7)]

    def since_week_before(column: str) -> str | None:
        return None if week_before.empty else change(latest[column], week_before[column].iloc[0])

    # A row that wraps: each figure as wide as its number, so none is cut short on a narrow window.
    row = st.container(horizontal=True, gap="medium")
    row.metric("Latest date", day(latest["date"]), width="content")
    # More cases is worse: a rise shows red (delta_color="inverse").
    for label, column in (("New cases, 7-day average", "new_cases_7d"),
                          ("New deaths, 7-day average", "new_deaths_7d")):
        row.metric(label, number(latest[column]), since_week_before(column), delta_color="inverse",
                   width="content", help="Mean of the day and the 6 reports before it; the change is since the "
                                         "average 7 days before.")
    for label, column in (("Cases to date", "cases"), ("Deaths to date", "deaths")):
        # a count not reported on the latest date: the latest one reported, and when
        reported = frame[frame[column].notna()]
        if reported.empty or reported["date"].iloc[-1] == latest["date"]:
            row.metric(label, number(latest[column]), width="content")
        else:
            last = reported.iloc[-1]
            row.metric(f"{label} (reported {day(last['date'])})", number(last[column]), width="content",
                       help=f"Not reported on {day(latest['date'])}: the latest value reported.")


def chart(figure: alt.TopLevelMixin) -> None:
    st.altair_chart(figure, width="stretch")


def table(frame: pd.DataFrame, name: str, caption: str | None = None, **column_config) -> None:
    """The rows as an interactive table (numbers with separators, averages to one decimal, dates as
    YYYY-MM-DD), and the same rows at full precision as `<name>.csv` to download."""
    if caption:
        st.caption(caption)
    config = {}
    for column, dtype in frame.dtypes.items():
        if pd.api.types.is_datetime64_any_dtype(dtype):
            # only the ledger's timestamps carry a time zone; the tables' dates are days
            with_time = getattr(dtype, "tz", None) is not None
            config[column] = st.column_config.DatetimeColumn(
                format="YYYY-MM-DD HH:mm z" if with_time else "YYYY-MM-DD")
        elif pd.api.types.is_float_dtype(dtype):
            config[column] = st.column_config.NumberColumn(format="%,.1f")
        elif pd.api.types.is_integer_dtype(dtype):
            config[column] = st.column_config.NumberColumn(format="%,d")
    st.dataframe(frame, hide_index=True, column_config={**config, **column_config}, placeholder="–")
    st.download_button(
        f"Download {name}.csv ({len(frame):,} row{'' if len(frame) == 1 else 's'})",
        frame.to_csv(index=False),
        file_name=f"{name}.csv",
        mime="text/csv",
        key=f"download_{name}",
    )
