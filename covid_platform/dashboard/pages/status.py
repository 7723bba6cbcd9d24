"""Data status: each dataset's last load and freshness, the files loaded and quarantined, rows set aside, and
what each file revised."""

import pandas as pd
import streamlit as st

from covid_platform.dashboard import queries, view
from covid_platform.datasets import DATASETS
from covid_platform.engine import ledger

st.title("Data status")
files = queries.read("files_by_dataset")
counts = ["loaded", "quarantined", "duplicates", "in_progress", "rows_loaded", "rows_set_aside"]
by_dataset = files.set_index("dataset") if not files.empty else pd.DataFrame(columns=["last_load", *counts])
now = pd.Timestamp.now(tz="UTC")

rows = []
for name, dataset in DATASETS.items():
    found = by_dataset.loc[name] if name in by_dataset.index else None
    last_load = found["last_load"] if found is not None else pd.NaT
    age_hours = (now - last_load).total_seconds() / 3600 if pd.notna(last_load) else None
    rows.append({  # what an analyst checks first on the left; the table's name and window last
        "dataset": name,
        "state": "never loaded" if age_hours is None else "fresh" if age_hours <= dataset.freshness_hours
        else "stale",
        "last_load": last_load,
        "hours_since": age_hours,
        **{column: int(found[column]) if found is not None else 0 for column in counts},
        "fresh_within_hours": dataset.freshness_hours,
        "table": f"covid.{dataset.table}",
    })
status = pd.DataFrame(rows)
status["last_load"] = pd.to_datetime(status["last_load"], utc=True)

stale = status[status["state"] == "stale"]["dataset"].tolist()
if status["loaded"].sum() == 0:
    st.info("No file has been loaded yet: drop one into the landing zone (`<LANDING_URL>/<dataset>/<name>.csv`).")
elif stale:
    st.warning(f"Stale (no load within its freshness window): {', '.join(stale)}.")
else:
    st.success("Every dataset loaded so far is fresh.")

view.table(status, "dataset_status", "A dataset is fresh while its last load is younger than its window. "
           f"rows_loaded: {ledger.ROWS_LOADED}")

# (title, query and file name, what an empty result says, the table's caption)
SECTIONS = [
    ("Quarantined files", "quarantined", st.success, "No file has been quarantined.",
     "The latest 100; each reason names the line, column, what was expected and what was found (or that the "
     "version was overwritten or deleted before it was archived: nothing was read)."),
    ("Rows set aside", "rejected_rows", st.success, "No row has been set aside.",
     "Rows with bad values from files that loaded (the latest 500); line 1 is the header."),
    ("Revisions", "revisions", st.caption, "No file has been merged yet.",
     "What each of the latest 100 files did to its clean table: keys it added, values it revised (differing "
     "from the version before), keys it repeated unchanged. Every version is kept: covid.<table>_history, and "
     "covid.<table>_as_of(time) for the table as it was."),
]
for title, name, say_empty, empty, caption in SECTIONS:
    st.subheader(title)
    frame = queries.read(name)
    if frame.empty:
        say_empty(empty)
    else:
        view.table(frame, name, caption)
