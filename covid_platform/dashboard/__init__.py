"""The analysts' dashboard (Streamlit): `covid-platform dashboard`, entry `app.py`, one module per page in
`pages/`, every query in `queries.py` on the read-only connection."""
