"""The read API: `covid-platform api` serves the declared tables over HTTP (FastAPI on uvicorn), read through
the read-only connection (DATABASE_READ_URL, else DATABASE_URL). `app.create_app` builds it."""
