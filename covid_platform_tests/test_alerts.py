"""Alerts reach a real HTTP webhook: a quarantined file, a failed run and a stale table."""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest
from dagster._core.loader import LoadingContextForTest
from dagster._core.test_utils import freeze_time
from dagster._daemon.freshness import FreshnessDaemon

from covid_platform.definitions import defs
from covid_platform.resources.notifier import Notifier
from covid_platform.sensors.alerts import freshness_alert, ingestion_failure_alert
from covid_platform_tests.helpers import drop, ingest, nyt_states_slice


@pytest.fixture
def webhook(monkeypatch):
    """A local HTTP server standing in for a Slack incoming webhook; yields the JSON bodies it received."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", f"http://127.0.0.1:{server.server_port}/hook")
    monkeypatch.setenv("DAGSTER_UI_URL", "http://dagster.example:3000")
    yield received
    server.shutdown()


def test_notifier_posts_slack_style_json(webhook):
    Notifier().send("Something happened", dataset="us_states", key="us_states/a.csv", empty=None)
    assert webhook == [{"text": "*Something happened*\ndataset: us_states\nkey: us_states/a.csv"}]


def test_notifier_without_webhook_only_logs(monkeypatch, caplog):
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    Notifier().send("Only logged", key="k")
    assert "Only logged" in caplog.text


def test_broken_webhook_does_not_raise(monkeypatch, caplog):
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "http://127.0.0.1:9/nothing-listens-here")
    Notifier(timeout_seconds=2).send("Still logged")
    assert "Alert webhook failed" in caplog.text


def run_failure_alert(instance, result, resources):
    with dg.build_run_status_sensor_context(
        sensor_name="ingestion_failure_alert",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources=resources,
    ) as context:
        ingestion_failure_alert(context.for_run_failure())


def test_quarantined_file_alerts_with_its_reason(landing, resources, webhook):
    bad = nyt_states_slice("2021-01-01", "2021-01-03", {"Ohio"}).replace(b",Ohio,39,", b",Ohio,39,-", 1)
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, drop(landing, "us_states/bad.csv", bad), instance)
        assert not result.success
        run_failure_alert(instance, result, resources)
    (alert,) = webhook
    assert alert["text"].startswith("*File quarantined*")
    assert "key: us_states/bad.csv" in alert["text"]
    assert "column 'cases', line 2: expected a non-negative whole number, got '-" in alert["text"]
    assert f"run: http://dagster.example:3000/runs/{result.run_id}" in alert["text"]


def test_failed_run_alerts(landing, resources, webhook, bucket, s3_client):
    key = drop(landing, "us_states/gone.csv", nyt_states_slice("2021-01-01", "2021-01-02"))
    with dg.instance_for_test() as instance:
        etag = landing.describe(key).etag
        s3_client.delete_object(Bucket=bucket, Key=f"drops/{key}")  # deleted between listing and reading
        result = ingest(landing, resources, key, instance, etag=etag)
        assert not result.success
        run_failure_alert(instance, result, resources)
    (alert,) = webhook
    assert alert["text"].startswith("*Run of ")
    assert "key: us_states/gone.csv" in alert["text"]


def evaluate_freshness(instance, at: float) -> None:
    """What the freshness daemon does on a tick, at a chosen time."""
    graph = defs.resolve_asset_graph()
    daemon = FreshnessDaemon()
    with freeze_time(at):
        for key in graph.get_all_asset_keys():
            node = graph.get(key)
            if node.freshness_policy is not None:
                asyncio.run(daemon._evaluate_asset(context=LoadingContextForTest(instance), node=node))


def test_stale_table_alerts_once(landing, resources, webhook):
    with dg.instance_for_test() as instance:
        key = drop(landing, "us_states/jan.csv", nyt_states_slice("2021-01-01", "2021-01-05"))
        assert ingest(landing, resources, key, instance).success

        def tick(cursor):
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, repository_def=defs.get_repository_def(),
                resources={"notifier": Notifier()},
            )
            freshness_alert(context)
            return context.cursor

        evaluate_freshness(instance, time.time())
        cursor = tick(None)
        assert webhook == []  # just loaded: fresh

        evaluate_freshness(instance, time.time() + 27 * 3600)  # 27 hours later, no new load
        cursor = tick(cursor)
        stale = sorted(alert["text"].split("\n")[1] for alert in webhook)
        assert stale == ["asset: national_daily", "asset: state_daily"]
        assert all("no successful load in the last 1 day, 2:00:00" in alert["text"] for alert in webhook)

        tick(cursor)  # still stale: no second alert
        assert len(webhook) == 2
