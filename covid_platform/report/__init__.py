"""The published daily report (`daily_report` asset, `assets/report.py`): figures.py reads what it shows,
changes.py compares it with what the previous report showed, page.py renders the self-contained HTML page,
site.py is where the pages are written (`REPORTS_URL`)."""
