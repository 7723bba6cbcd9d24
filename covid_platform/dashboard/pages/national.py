"""National overview: new cases and deaths per day in the United States, with their 7-day averages."""

import streamlit as st

from covid_platform.dashboard import charts, queries, view
from covid_platform.datasets import US_STATES

st.title("National overview")
frame = queries.read("national")
if frame.empty:
    view.no_data(US_STATES, "national_daily")

st.caption(
    f"United States, {view.day(frame['date'].iloc[0])} to {view.day(frame['date'].iloc[-1])}: the sums over the "
    "states, each with its latest reported value. The charts start a week after the first date, whose new cases "
    "and deaths are all those reported up to it."
)
view.latest_figures(frame)

charted = view.daily_chart_rows(frame, starts_series=True)
view.chart(charts.daily(charted, "new_cases", "New cases per day (people)"))
view.chart(charts.daily(charted, "new_deaths", "New deaths per day (people)"))
view.table(frame.iloc[::-1], "national_daily",
           "Newest first: daily differences, their 7-day averages, and the cumulative counts.")
