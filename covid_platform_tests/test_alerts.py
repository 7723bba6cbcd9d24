"""Alerts reach a real HTTP webhook and an SNS topic on moto's server (read back through a subscribed SQS
queue): a quarantined file, a failed run and a stale table, each once, naming dataset, key, reason and run."""

import asyncio
import json
import time
import uuid
from types import SimpleNamespace

import boto3
import dagster as dg
import pytest
from dagster._core.loader import LoadingContextForTest
from dagster._core.test_utils import freeze_time
from dagster._daemon.freshness import FreshnessDaemon

from covid_platform.compat import WILL_RETRY_TAG
from covid_platform.assets.raw import KEY_TAG
from covid_platform.definitions import defs
from covid_platform.engine.ledger import partition_key
from covid_platform.resources.notifier import Notifier, sns_subject
from covid_platform.resources.warehouse import Warehouse
from covid_platform.sensors import alerts as alert_sensors
from covid_platform.sensors.alerts import freshness_alert, ingestion_failure_alert
from covid_platform_tests.conftest import UI
from covid_platform_tests.helpers import ASSETS, drop, ingest, nyt_states_slice

HOUR = 3600


@pytest.fixture
def sns(s3_endpoint, monkeypatch):
    """A topic on moto's SNS with an SQS queue subscribed; yields a function returning (and consuming) the
    notifications delivered so far, as {"Subject", "Message"}. Reached through AWS_ENDPOINT_URL, as
    deployed."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    sns_client = boto3.client("sns", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    name = f"alerts-{uuid.uuid4().hex[:12]}"
    topic = sns_client.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    queue_arn = attributes["QueueArn"]
    sns_client.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("ALERT_SNS_TOPIC_ARN", topic)

    def delivered() -> list[dict]:
        notifications = []
        while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
            for message in batch:
                body = json.loads(message["Body"])
                assert body["TopicArn"] == topic
                notifications.append({"Subject": body.get("Subject"), "Message": body["Message"]})
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        return notifications

    yield delivered


@pytest.fixture
def alerts(webhook, sns):
    """Both destinations; returns the texts of the alerts sent since the last call, after checking that the
    webhook and SNS received the same ones, each SNS subject being the text's title."""
    seen = 0

    def new() -> list[str]:
        nonlocal seen
        texts = sorted(body["text"] for body in webhook[seen:])
        seen = len(webhook)
        notifications = sns()
        assert sorted(n["Message"] for n in notifications) == texts
        assert all(n["Message"].startswith(f"*{n['Subject']}*\n") for n in notifications)
        return texts

    return new


def test_notifier_posts_slack_style_json(webhook):
    Notifier().send("Something happened", dataset="us_states", key="us_states/a.csv", empty=None)
    assert webhook == [{"text": "*Something happened*\ndataset: us_states\nkey: us_states/a.csv"}]


def test_notifier_publishes_the_same_text_to_sns(webhook, sns):
    Notifier().send("Something happened", dataset="us_states", key="us_states/a.csv", empty=None)
    assert sns() == [{"Subject": "Something happened", "Message": webhook[0]["text"]}]


def test_sns_subject_is_one_ascii_line_of_at_most_100_characters(webhook, sns):
    title = "File quarantined: us_states/" + "très-long-name-" * 10 + ".csv\nsecond line"
    Notifier().send(title, key="k")
    (notification,) = sns()  # moto, like SNS, refuses a subject over 100 characters
    assert notification["Subject"] == sns_subject(title)
    assert len(notification["Subject"]) == 100
    assert notification["Subject"].startswith("File quarantined: us_states/tr s-long-name-")
    assert notification["Subject"].endswith("...")
    assert notification["Message"] == f"*{title}*\nkey: k"


def test_notifier_without_destinations_only_logs(monkeypatch, caplog):
    monkeypatch.delenv("ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("ALERT_SNS_TOPIC_ARN", raising=False)
    Notifier().send("Only logged", key="k")
    assert "Only logged" in caplog.text


def test_broken_webhook_does_not_raise_nor_log_its_url(monkeypatch, caplog):
    monkeypatch.delenv("ALERT_SNS_TOPIC_ARN", raising=False)
    monkeypatch.setenv("ALERT_WEBHOOK_URL", "http://127.0.0.1:9/services/T0/B0/secret-token")
    Notifier(timeout_seconds=2).send("Still logged")
    assert "Still logged" in caplog.text
    assert "Alert webhook failed (ALERT_WEBHOOK_URL): ConnectionError" in caplog.text
    assert "secret-token" not in caplog.text and "127.0.0.1:9" not in caplog.text


def test_revoked_webhook_logs_its_status_not_its_url(webhook, monkeypatch, caplog):
    url = f"{dg.EnvVar('ALERT_WEBHOOK_URL').get_value()}/secret-token/revoked"
    monkeypatch.setenv("ALERT_WEBHOOK_URL", url)
    Notifier().send("Still logged")
    assert "Alert webhook failed (ALERT_WEBHOOK_URL): HTTPError, HTTP 403" in caplog.text
    assert "secret-token" not in caplog.text and url not in caplog.text


def test_broken_sns_does_not_stop_the_webhook(webhook, s3_endpoint, monkeypatch, caplog):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    missing = "arn:aws:sns:us-east-1:123456789012:no-such-topic"
    monkeypatch.setenv("ALERT_SNS_TOPIC_ARN", missing)
    Notifier().send("Still posted", key="k")
    assert webhook == [{"text": "*Still posted*\nkey: k"}]
    assert f"Alert SNS publish failed ({missing})" in caplog.text


def run_failure_alert(instance, result, resources):
    with dg.build_run_status_sensor_context(
        sensor_name="ingestion_failure_alert",
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),  # with the tags added since it ended
        dagster_event=result.get_run_failure_event(),
        resources=resources,
    ) as context:
        ingestion_failure_alert(context.for_run_failure())


def test_quarantined_file_alerts_with_its_reason(landing, resources, alerts):
    bad = nyt_states_slice("2021-01-01", "2021-01-03", {"Ohio"}).replace(b",Ohio,39,", b",Ohio,39,-", 1)
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, drop(landing, "us_states/bad.csv", bad), instance)
        assert not result.success
        run_failure_alert(instance, result, resources)
    (alert,) = alerts()
    lines = alert.split("\n")
    assert lines[0] == "*File quarantined: us_states/bad.csv*"
    assert "dataset: us_states" in lines
    assert "key: us_states/bad.csv" in lines
    assert "line 2, column 'cases': expected a non-negative whole number, got '-700380'" in alert
    assert f"run: {UI}/runs/{result.run_id}" in lines


def test_a_quarantined_partition_run_again_from_the_ui_alerts_with_its_key(landing, resources, alerts):
    """A run of the file's partition launched from the UI or a backfill has no key tag (the sensor's runs do):
    the alert finds the file in the ledger by the partition; with the warehouse down, it still goes, from the
    run's own failure."""
    bad = nyt_states_slice("2021-01-01", "2021-01-03", {"Ohio"}).replace(b",Ohio,39,", b",Ohio,39,-", 1)
    down = {**resources, "warehouse": Warehouse(database_url="postgresql://postgres@127.0.0.1:1/down")}
    with dg.instance_for_test() as instance:
        key = drop(landing, "us_states/bad.csv", bad)
        assert not ingest(landing, resources, key, instance).success
        again = dg.materialize(ASSETS, selection=["raw_us_states"], instance=instance, resources=resources,
                               partition_key=partition_key(key, landing.describe(key).etag), raise_on_error=False)
        assert not again.success and KEY_TAG not in instance.get_run_by_id(again.run_id).tags
        run_failure_alert(instance, again, resources)
        (alert,) = alerts()
        run_failure_alert(instance, again, down)
        (without_ledger,) = alerts()
    lines = alert.split("\n")
    assert lines[0] == "*File quarantined: us_states/bad.csv*"
    assert "key: us_states/bad.csv" in lines and "dataset: us_states" in lines
    assert "line 2, column 'cases': expected a non-negative whole number" in alert
    assert without_ledger.startswith("*Run failed: "), without_ledger  # no ledger: no file to name
    assert "line 2, column 'cases'" in without_ledger, without_ledger


def test_failed_run_alerts(landing, resources, alerts, bucket, s3_client):
    key = drop(landing, "us_states/gone.csv", nyt_states_slice("2021-01-01", "2021-01-02"))
    with dg.instance_for_test() as instance:
        etag = landing.describe(key).etag
        s3_client.delete_object(Bucket=bucket, Key=f"drops/{key}")  # deleted between listing and reading
        result = ingest(landing, resources, key, instance, etag=etag)
        assert not result.success
        run_failure_alert(instance, result, resources)
    (alert,) = alerts()
    lines = alert.split("\n")
    assert lines[0] == "*Run failed: us_states/gone.csv*"
    assert "dataset: us_states" in lines
    assert "key: us_states/gone.csv" in lines
    assert f"no longer has ETag {etag}: it was overwritten or deleted after it was listed" in alert
    assert f"run: {UI}/runs/{result.run_id}" in lines

    # a run Dagster's run retries will launch again (its worker crashed) says so
    with dg.instance_for_test() as instance:
        result = ingest(landing, resources, key, instance, etag=etag)
        instance.add_run_tags(result.run_id, {WILL_RETRY_TAG: "true"})
        run_failure_alert(instance, result, resources)
    assert alerts()[-1].split("\n")[0] == "*Run failed, will be retried: us_states/gone.csv*"


def evaluate_freshness(instance, at: float) -> None:
    """What the freshness daemon does on a tick, at a chosen time."""
    graph = defs.resolve_asset_graph()
    daemon = FreshnessDaemon()
    with freeze_time(at):
        for key in graph.get_all_asset_keys():
            node = graph.get(key)
            if node.freshness_policy is not None:
                asyncio.run(daemon._evaluate_asset(context=LoadingContextForTest(instance), node=node))


def test_stale_table_alerts_once_per_fail_window(landing, resources, alerts):
    window = 26 * HOUR  # the tables' fail window: 1 day, 2:00:00
    with dg.instance_for_test() as instance:
        key = drop(landing, "us_states/jan.csv", nyt_states_slice("2021-01-01", "2021-01-05"))
        loaded = ingest(landing, resources, key, instance)
        assert loaded.success
        cursor = None

        def tick(at: float) -> None:
            nonlocal cursor
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, repository_def=defs.get_repository_def(),
                resources={"notifier": Notifier()},
            )
            with freeze_time(at):
                freshness_alert(context)
            cursor = context.cursor

        start = time.time()
        evaluate_freshness(instance, start)
        tick(start)
        assert alerts() == []  # just loaded: fresh

        stale_at = start + 27 * HOUR  # no new load since
        evaluate_freshness(instance, stale_at)
        tick(stale_at)
        first = alerts()
        assert [alert.split("\n")[0] for alert in first] == [
            "*Table is stale: national_daily*", "*Table is stale: state_daily*"
        ]
        for alert, asset in zip(first, ["national_daily", "state_daily"]):
            lines = alert.split("\n")
            assert "dataset: us_states" in lines
            assert f"asset: {asset}" in lines
            assert "key: us_states/jan.csv" in lines  # the last file loaded
            assert any(line.startswith("reason: no successful load in the last 1 day, 2:00:00 (last load ")
                       for line in lines)
            assert f"run: {UI}/runs/{loaded.run_id}" in lines
            assert f"asset_page: {UI}/assets/{asset}" in lines

        for minutes in range(1, window // 60, 7):  # ticks all through the window: still stale, no alert
            tick(stale_at + minutes * 60)
        tick(stale_at + window - 1)
        assert alerts() == []

        tick(stale_at + window)  # a whole window without a load: reminded once
        assert len(alerts()) == 2
        tick(stale_at + window + 60)
        assert alerts() == []

        feb = drop(landing, "us_states/feb.csv", nyt_states_slice("2021-02-01", "2021-02-03"))
        assert ingest(landing, resources, feb, instance).success
        recovered_at = time.time()
        evaluate_freshness(instance, recovered_at)
        tick(stale_at + window + 120)
        assert alerts() == []  # fresh again: no alert, and the last reminder is forgotten

        evaluate_freshness(instance, recovered_at + 27 * HOUR)
        tick(stale_at + window + 180)  # stale again, less than a window after the reminder: alerts at once
        again = alerts()
        assert len(again) == 2
        assert all("key: us_states/feb.csv" in alert for alert in again)


def test_the_failure_alert_keeps_to_this_platforms_runs():
    """It watches every code location's runs (a shell's `dagster asset materialize -m …` comes from none): a
    run of this platform's assets, checks or jobs is its own; another location's asset job is not, even one
    of checks alone (its asset selection empty)."""
    from dagster._core.storage.dagster_run import DagsterRun

    repository = defs.get_repository_def()
    elsewhere = dg.AssetKey("elsewhere")

    def ours(**run) -> bool:
        context = SimpleNamespace(dagster_run=DagsterRun(**run), repository_def=repository)
        return alert_sensors._ours(context)

    assert ours(job_name="__ASSET_JOB", asset_selection={dg.AssetKey("us_states_pull")})
    assert ours(job_name="replay_us_states")
    assert not ours(job_name="__ASSET_JOB", asset_selection={elsewhere})
    assert not ours(job_name="__ASSET_JOB", asset_check_selection={dg.AssetCheckKey(elsewhere, "valid")})
    assert not ours(job_name="some_other_job")
