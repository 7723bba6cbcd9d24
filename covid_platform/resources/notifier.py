"""Alerts: always a log line, and a POST to a Slack-style incoming webhook when one is configured."""

import json
import os

import dagster as dg
import requests


class Notifier(dg.ConfigurableResource):
    """Sends alerts. The webhook URL is a secret, so it is read from the environment when an alert is sent
    (unset or empty: log only) rather than stored in the resource's config shown in the UI."""

    webhook_url_env: str = "ALERT_WEBHOOK_URL"
    ui_url_env: str = "DAGSTER_UI_URL"
    timeout_seconds: float = 10.0

    def run_link(self, run_id: str) -> str | None:
        base = os.environ.get(self.ui_url_env, "").rstrip("/")
        return f"{base}/runs/{run_id}" if base else None

    def send(self, title: str, **details: str | None) -> None:
        lines = [f"*{title}*", *(f"{name}: {value}" for name, value in details.items() if value)]
        text = "\n".join(lines)
        logger = dg.get_dagster_logger("covid_platform.alerts")
        logger.warning("ALERT %s", json.dumps({"title": title, **details}))
        url = os.environ.get(self.webhook_url_env)
        if not url:
            return
        try:
            response = requests.post(url, json={"text": text}, timeout=self.timeout_seconds)
            response.raise_for_status()
        except requests.RequestException as error:
            # The log line above already carries the alert; a broken webhook must not stop the sensor.
            logger.error("Alert webhook failed (%s): %s", self.webhook_url_env, error)
