"""Counties: the 20 with the most new cases (7-day average) on a chosen date, and one state's counties."""

import streamlit as st

from covid_platform.dashboard import charts, queries, view
from covid_platform.datasets import US_COUNTIES

PEOPLE = "people per day"

st.title("Counties")
dates = queries.read("county_dates")
if dates.empty or dates["last"].isna().all():
    view.no_data(US_COUNTIES)

first, last = dates["first"].iloc[0].date(), dates["last"].iloc[0].date()
day = st.date_input("Date", value=last, min_value=first, max_value=last, format="YYYY-MM-DD", key="date")

st.subheader(f"The 20 counties with the most new cases on {day}")
top = queries.read("top_counties", date=day)
if top.empty:
    st.info(f"No county reported on {day}.")
else:
    top.insert(0, "place", top["county"] + ", " + top["state"])
    view.chart(charts.ranked(top, "place", "new_cases_7d", "New cases per day, 7-day average (people)", PEOPLE))
    view.table(top.drop(columns="place"), view.slug("top_counties", day))

st.subheader(f"A state's counties on {day}")
states = queries.read("county_states")["state"].tolist()
state = st.selectbox("State", states, key="county_state")
counties = queries.read("state_counties", state=state, date=day)
if counties.empty:
    st.info(f"No county of {state} reported on {day}.")
else:
    view.chart(charts.ranked(counties, "county", "new_cases_7d",
                             f"New cases per day in {state}, 7-day average (people)", PEOPLE))
    view.table(counties, view.slug(state, "counties", day))
