"""Schools: Chicago Public Schools' reported cases by school and week."""

import streamlit as st

from covid_platform.dashboard import charts, queries, view
from covid_platform.datasets import CPS_SCHOOLS

SHOWN = 5  # schools charted at first: those with the most cases

st.title("Schools")
weeks = queries.read("school_weeks")
if weeks.empty:
    view.no_data(CPS_SCHOOLS)

summary = queries.read("school_summary")
# A school is charted by name, or by id where no name was reported (or the summary is not built yet).
names = {} if summary.empty else dict(zip(summary["school_id"], summary["school"].fillna(summary["school_id"])))
weeks["school"] = weeks["school_id"].map(names).fillna(weeks["school_id"])
weeks = weeks.rename(columns={"week": "date"})  # the charts' x axis

st.caption(f"Cases reported by Chicago Public Schools, {view.day(weeks['date'].min())} to "
           f"{view.day(weeks['date'].max())}, by week (weeks start on Monday).")
# a week no school reported stays empty (not 0)
all_schools = weeks.groupby("date", as_index=False)["new_cases"].sum(min_count=1)
view.chart(charts.over_time(all_schools, "new_cases", "Cases per week, all schools (people)",
                                  "people per week", ",.0f"))

ranked = list(dict.fromkeys(names.values())) if names else sorted(weeks["school"].unique())
chosen = st.multiselect("Schools", ranked, default=ranked[:SHOWN], key="schools")
if chosen:
    view.chart(charts.over_time(weeks[weeks["school"].isin(chosen)], "new_cases",
                                "Cases per week at the chosen schools (people)", "people per week", ",.0f",
                                by="school"))

if not summary.empty:
    view.table(summary, "school_summary", "Every school, most cases first; the last 7 and 14 days end on the "
                                          "latest report date.")
view.table(weeks[["date", "school_id", "school", "new_cases"]].rename(columns={"date": "week"}),
           "school_weeks", "Cases by school and week.")
