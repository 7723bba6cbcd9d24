# The platform's image: webserver and daemon against PostgreSQL (DAGSTER_PG_URL, DATABASE_URL) and an
# S3 landing zone (LANDING_URL, AWS_*). Run it twice: `dagster-webserver -h 0.0.0.0 -p 3000 -w workspace.yaml`
# and `dagster-daemon run -w workspace.yaml` (the default command). The read API is a service of its own on
# the same image: `covid-platform api --address 0.0.0.0` (port 8000, DATABASE_READ_URL, health: /health), and
# so is the MQTT stream bridge: `covid-platform stream` (MQTT_URL, LANDING_URL; health: port 8081, /health).
FROM python:3.11-slim

ENV DAGSTER_HOME=/opt/dagster/home \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/dagster/app
COPY pyproject.toml README.md ./
COPY covid_platform ./covid_platform
RUN pip install . && useradd --system --home /opt/dagster dagster \
    && mkdir -p "$DAGSTER_HOME" && chown dagster "$DAGSTER_HOME"
COPY workspace.yaml ./
COPY covid_platform/dagster.yaml "$DAGSTER_HOME/dagster.yaml"

USER dagster
EXPOSE 3000 8000 8081
CMD ["dagster-daemon", "run", "-w", "workspace.yaml"]
