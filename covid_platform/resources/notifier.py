"""Alerts (and notices for readers, such as a published report): always a log line, then a POST to a
Slack-style incoming webhook and a message on an Amazon SNS topic, each when configured."""

import json
import os
import re

import boto3
import dagster as dg
import requests
from botocore.exceptions import BotoCoreError, ClientError

SUBJECT_LIMIT = 100  # SNS rejects longer subjects
NOT_IN_SUBJECT = re.compile(r"[^\x20-\x7e]+")  # SNS subjects: printable ASCII on one line


def sns_subject(title: str) -> str:
    subject = NOT_IN_SUBJECT.sub(" ", title).strip() or "Alert"
    return subject if len(subject) <= SUBJECT_LIMIT else subject[: SUBJECT_LIMIT - 3] + "..."


def topic_region(topic_arn: str) -> str | None:
    """`arn:aws:sns:<region>:<account>:<name>` → region; None (boto3's default region) if not an ARN."""
    parts = topic_arn.split(":")
    return (parts[3] or None) if len(parts) == 6 else None


class Notifier(dg.ConfigurableResource):
    """Sends alerts. Destinations are read from the environment when an alert is sent (unset or empty: that
    destination is skipped), not stored in the resource's config shown in the UI: the webhook URL is a
    secret, and is never logged. SNS is reached through boto3's standard AWS environment (credentials,
    `AWS_ENDPOINT_URL`); the region is the topic's own, taken from its ARN."""

    webhook_url_env: str = "ALERT_WEBHOOK_URL"
    sns_topic_arn_env: str = "ALERT_SNS_TOPIC_ARN"
    ui_url_env: str = "DAGSTER_UI_URL"
    # Notices for readers (a daily report published) go to destinations of their own: analysts read
    # them, not whoever is on call for the alerts (unset: logged only).
    report_webhook_url_env: str = "REPORT_WEBHOOK_URL"
    report_sns_topic_arn_env: str = "REPORT_SNS_TOPIC_ARN"
    timeout_seconds: float = 10.0

    def _ui_link(self, path: str) -> str | None:
        base = os.environ.get(self.ui_url_env, "").rstrip("/")
        return f"{base}/{path}" if base else None

    def run_link(self, run_id: str) -> str | None:
        return self._ui_link(f"runs/{run_id}")

    def asset_link(self, key: dg.AssetKey) -> str | None:
        return self._ui_link(f"assets/{'/'.join(key.path)}")

    def send(self, title: str, **details: str | None) -> None:
        """One alert: `title` (also the SNS subject) and one `name: value` line per non-empty detail."""
        logger = dg.get_dagster_logger("covid_platform.alerts")
        logger.warning("ALERT %s", json.dumps({"title": title, **details}))
        self._deliver(logger, "Alert", self.webhook_url_env, self.sns_topic_arn_env, title, details)

    def announce(self, title: str, **details: str | None) -> None:
        """A notice for readers (a report published), as `send` words an alert, to the report destinations."""
        logger = dg.get_dagster_logger("covid_platform.notices")
        logger.info("NOTICE %s", json.dumps({"title": title, **details}))
        self._deliver(logger, "Notice", self.report_webhook_url_env, self.report_sns_topic_arn_env, title,
                      details)

    def _deliver(self, logger, kind: str, webhook_url_env: str, sns_topic_arn_env: str, title: str,
                 details: dict[str, str | None]) -> None:
        lines = [f"*{title}*", *(f"{name}: {value}" for name, value in details.items() if value)]
        text = "\n".join(lines)
        # The log line already carries the message; a broken destination must not stop the sensor.
        url = os.environ.get(webhook_url_env)
        if url:
            try:
                response = requests.post(url, json={"text": text}, timeout=self.timeout_seconds)
                response.raise_for_status()
            except requests.RequestException as error:
                # requests puts the URL in its messages: log the kind of failure only.
                status = error.response.status_code if error.response is not None else None
                logger.error(
                    "%s webhook failed (%s): %s%s",
                    kind, webhook_url_env, type(error).__name__, f", HTTP {status}" if status else "",
                )
        topic_arn = os.environ.get(sns_topic_arn_env)
        if topic_arn:
            try:
                sns = boto3.client("sns", region_name=topic_region(topic_arn))
                sns.publish(TopicArn=topic_arn, Subject=sns_subject(title), Message=text)
            except (BotoCoreError, ClientError) as error:
                logger.error("%s SNS publish failed (%s): %s", kind, topic_arn, error)
