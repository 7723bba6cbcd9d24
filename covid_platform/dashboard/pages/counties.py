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

WHOLE_WEEK = ("Only counties with a row on each of the 7 days before are ranked: where the week holds a county's "
              "first date in the data (its new cases there are its cases to date) or a gap, its new cases count "
              "more than one day.")

st.subheader(f"The 20 counties with the most new cases on {day}")
top = queries.read("top_counties", date=day)
st.caption(WHOLE_WEEK)
if top.empty:
    st.info(f"No county reported on {day} with the 7 days before it.")
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
    ranked = counties[counties["whole_week"]]
    if not ranked.empty:
        view.chart(charts.ranked(ranked, "county", "new_cases_7d",
                                 f"New cases per day in {state}, 7-day average (people)", PEOPLE))
    if len(ranked) < len(counties):
        st.caption(f"Charted: the counties with a row on each of the 7 days before ({len(ranked)} of "
                   f"{len(counties)}; `whole_week` in the table).")
    view.table(counties, view.slug(state, "counties", day))
