"""The dashboard's entry: `streamlit run covid_platform/dashboard/app.py` (or `covid-platform dashboard`)."""

from pathlib import Path

import psycopg2
import streamlit as st

from covid_platform.dashboard import queries

# the icon from the package: a Material icon's favicon is fetched from Google's font servers on each page
st.set_page_config(page_title="COVID-19 surveillance", page_icon=str(Path(__file__).with_name("icon.png")),
                   layout="wide")

PAGES = [
    st.Page("pages/national.py", title="National overview", icon=":material/public:", default=True),
    st.Page("pages/states.py", title="State explorer", icon=":material/map:"),
    st.Page("pages/counties.py", title="Counties", icon=":material/location_city:"),
    st.Page("pages/schools.py", title="Schools", icon=":material/school:"),
    st.Page("pages/status.py", title="Data status", icon=":material/fact_check:"),
]
page = st.navigation(PAGES)

if not queries.reader_url():
    st.error("No database: set DATABASE_READ_URL (a covid_reader login) or DATABASE_URL.")
    st.stop()
try:
    latest = queries.latest_load(queries.reader_url())
    st.sidebar.caption(f"Last file processed: {latest[:19] + ' UTC' if latest else 'none yet'}")
    page.run()
except psycopg2.OperationalError as error:
    # The message names the host and port, never the password.
    st.error(f"The database cannot be reached: {error}")
