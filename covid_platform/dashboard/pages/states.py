"""State explorer: one state's cases and deaths over chosen dates, and its test positivity where reported."""

import pandas as pd
import streamlit as st

from covid_platform.dashboard import charts, queries, view
from covid_platform.datasets import COVIDTRACKING, US_STATES

DEFAULT_STATE = "New York"
DEFAULT_DAYS = 180

st.title("State explorer")
names = queries.read("state_names")
if names.empty:
    view.no_data(US_STATES)

states = names["state"].tolist()
pick, span = st.columns([1, 2])
state = pick.selectbox("State", states, index=states.index(DEFAULT_STATE) if DEFAULT_STATE in states else 0,
                      key="state")
dates = queries.read("state_dates", state=state).iloc[0]
first, last = dates["first"].date(), dates["last"].date()
if "dates" not in st.session_state or st.session_state.get("dates_of") != state:
    # another state: its own latest days, not the range chosen for the one before (which Streamlit keeps
    # while it lies within the new state's dates, hiding the days a state reported ahead of the other); or
    # the page opened again (Streamlit forgets a widget's value when another page is shown)
    st.session_state["dates"] = (max(first, last - pd.Timedelta(days=DEFAULT_DAYS).to_pytimedelta()), last)
    st.session_state["dates_of"] = state
chosen = span.date_input("Dates", min_value=first, max_value=last, format="YYYY-MM-DD", key="dates")
if len(chosen) != 2:
    st.info("Choose the last date of the range.")  # the picker returns one date until the second is chosen
    st.stop()
start, end = chosen
# from 7 days before the range: the latest figures' change since a week before, however short the range
read = queries.read("state_daily", state=state, first=start - pd.Timedelta(days=7).to_pytimedelta(), last=end)
frame = read[read["date"] >= pd.Timestamp(start)].reset_index(drop=True)
if frame.empty:
    st.info(f"{state} reported nothing between {start} and {end}.")
    st.stop()
first_report = " The charts start a week after the state's first date, whose new cases and deaths are all " \
    "those reported up to it." if start == first else ""
st.caption(f"{state}, {view.day(frame['date'].iloc[0])} to {view.day(frame['date'].iloc[-1])}.{first_report}")
view.latest_figures(read)

charted = view.daily_chart_rows(frame, starts_series=start == first)
view.chart(charts.daily(charted, "new_cases", f"New cases per day in {state} (people)"))
view.chart(charts.daily(charted, "new_deaths", f"New deaths per day in {state} (people)"))

positivity = queries.read("positivity", state=state, first=start, last=end)
st.subheader("Test positivity")
percent = {}
if positivity.empty:
    st.info(f"No test positivity for {state} in these dates: it comes from `covid.{COVIDTRACKING.table}` "
            f"(`{COVIDTRACKING.name}` files).")
else:
    all_positive = int((positivity["positivity_7d"] == 1).sum())
    above = int((positivity["positivity_7d"] > 1).sum())
    st.caption("New positive results over new test results in the 7 days ending that day; none where the state "
               "did not report both that day and 7 days before."
               + (f" On {all_positive} of these days every test counted was a positive: the state's negative "
                  "results were not reported (100% is not a measured positivity)." if all_positive else "")
               + (f" On {above} of these days positive results rose more than test results (one of them revised): "
                  "above 100% is not a measured positivity." if above else ""))
    view.chart(charts.over_time(positivity, "positivity_7d", f"Test positivity in {state}, 7 days (% of tests)",
                                "% of tests positive", ".1%"))
    frame = frame.merge(positivity[["date", "positivity_7d"]], on="date", how="left")
    percent["positivity_7d"] = st.column_config.NumberColumn(format="percent")

view.table(frame.iloc[::-1], view.slug(state, "daily"), "Newest first.", **percent)
