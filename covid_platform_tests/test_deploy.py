"""deploy/ecs: the production instance built from its dagster.yaml as the webserver and the daemon build it,
against this machine's PostgreSQL and the AWS APIs (ECS, EC2, Secrets Manager, S3) served by moto over HTTP.

A run goes the production path: submitted to the queue, dequeued by the daemon's run-coordinator loop, and
started by the EcsRunLauncher as an ECS task of a task definition it registers, in the daemon's own cluster
and network, with the image the code server reports. Fargate starting the container is the one step moto
cannot take: the container's command is then run here with exactly the environment its task definition
gives it, and ingests a file.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import dagster as dg
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from covid_platform.assets.raw import ETAG_TAG, KEY_TAG
from covid_platform.cli import sqlalchemy_url
from covid_platform.definitions import defs
from covid_platform.engine.ledger import partition_key
from covid_platform_tests import helpers
from covid_platform_tests.conftest import _free_port

REPO = Path(__file__).resolve().parents[1]
ECS_DIR = REPO / "deploy" / "ecs"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/covid-platform:test"
# ECS rejects a RunTask whose overrides (the run's command) pass 8,192 characters.
ECS_OVERRIDES_LIMIT = 8192


def env_references(node) -> set[str]:
    """Every `{env: NAME}` in a parsed YAML document."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_references(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(env_references(value) for value in node))
    return set()


def ecs_config() -> dict:
    return yaml.safe_load((ECS_DIR / "dagster.yaml").read_text())


def run_environment(config: dict) -> set[str]:
    """The variables a run task receives: env_vars by value, secrets from Secrets Manager."""
    launcher = config["run_launcher"]["config"]
    return {*launcher["env_vars"], *(secret["name"] for secret in launcher["secrets"])}


def env_vars_of(value) -> set[str]:
    """The `dg.EnvVar`s a resource (and the resources inside it) is configured with."""
    if isinstance(value, dg.EnvVar):
        return {value.env_var_name}
    if isinstance(value, dg.ConfigurableResource):
        return set().union(*(env_vars_of(getattr(value, name)) for name in type(value).model_fields))
    return set()


def instance_from(yaml_path: Path, home: Path) -> dg.DagsterInstance:
    """The instance a process builds with DAGSTER_HOME holding this file as dagster.yaml."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(yaml_path, home / "dagster.yaml")
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def test_every_variable_of_the_ecs_deployment_is_documented_and_reaches_the_runs():
    config = ecs_config()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", (REPO / "deploy" / "README.md").read_text(), re.M))
    read_by_instance = env_references(config)
    workspace = env_references(yaml.safe_load((ECS_DIR / "workspace.yaml").read_text()))
    assert read_by_instance | workspace | run_environment(config) <= documented

    # A run worker builds the resources (their EnvVars) and the instance: its storage and compute logs.
    needed = set().union(*(env_vars_of(resource) for resource in defs.resources.values()))
    needed |= env_references(config["storage"]) | env_references(config["compute_logs"])
    assert needed >= {"DATABASE_URL", "LANDING_URL", "DAGSTER_PG_URL", "DAGSTER_COMPUTE_LOGS_BUCKET"}
    assert needed <= run_environment(config)


@pytest.fixture
def moto_aws(s3_endpoint, monkeypatch):
    """The AWS account of the deployment, in moto: a VPC, a cluster in which the daemon's own task runs,
    the run secrets, the log group and the compute-log bucket. Returns what the test needs to know."""
    from moto.ecs.models import EC2ContainerServiceBackend

    # moto sizes every task from container-level memory, which a Fargate task definition may leave to
    # the task level (as the launcher's do); AWS accepts that. Sizing plays no part in what is tested.
    monkeypatch.setattr(
        EC2ContainerServiceBackend,
        "_calculate_task_resource_requirements",
        staticmethod(lambda task_definition: {"CPU": 0, "MEMORY": 0, "PORTS": [], "PORTS_UDP": []}),
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    suffix = uuid.uuid4().hex[:8]
    ec2, ecs = boto3.client("ec2"), boto3.client("ecs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"dagster-{suffix}", Description="dagster", VpcId=vpc)
    group = group["GroupId"]
    cluster = ecs.create_cluster(clusterName=f"covid-{suffix}")["cluster"]["clusterArn"]
    ecs.register_task_definition(
        family=f"daemon-{suffix}", networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="512",
        memory="1024", containerDefinitions=[{"name": "daemon", "image": IMAGE}],
    )
    daemon_task = ecs.run_task(
        cluster=cluster, taskDefinition=f"daemon-{suffix}", launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}},
    )["tasks"][0]["taskArn"]
    log_group = f"/ecs/covid-platform-{suffix}"
    boto3.client("logs").create_log_group(logGroupName=log_group)
    bucket, landing_bucket = f"dagster-logs-{suffix}", f"covid-landing-{suffix}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    boto3.client("s3").create_bucket(Bucket=landing_bucket)

    # The daemon learns its own task from the ECS task metadata endpoint.
    class Metadata(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"Cluster": cluster, "TaskARN": daemon_task}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    metadata = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=metadata.serve_forever, daemon=True).start()
    monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", f"http://127.0.0.1:{metadata.server_port}/v4/meta")
    yield {
        "cluster": cluster, "subnet": subnet, "security_group": group, "suffix": suffix,
        "log_group": log_group, "bucket": bucket, "landing_bucket": landing_bucket,
    }
    metadata.shutdown()


@pytest.fixture
def ecs_env(moto_aws, database_url, monkeypatch):
    """The secrets in Secrets Manager, and the daemon's environment as its ECS task definition sets it."""
    secretsmanager = boto3.client("secretsmanager")
    secrets = {
        name: secretsmanager.create_secret(Name=f"{name}-{moto_aws['suffix']}", SecretString=value)["ARN"]
        for name, value in {
            "DATABASE_URL": database_url,
            "DAGSTER_PG_URL": sqlalchemy_url(database_url),
            "ALERT_WEBHOOK_URL": "https://hooks.example.invalid/covid",  # sensors send alerts, runs do not
        }.items()
    }
    account = "arn:aws:iam::123456789012:role"
    for name, value in {
        "DAGSTER_PG_URL": sqlalchemy_url(database_url),
        "DAGSTER_COMPUTE_LOGS_BUCKET": moto_aws["bucket"],
        "ECS_EXECUTION_ROLE_ARN": f"{account}/covid-platform-execution",
        "ECS_RUN_TASK_ROLE_ARN": f"{account}/covid-platform-run",
        "ECS_LOG_GROUP": moto_aws["log_group"],
        "DATABASE_URL_SECRET_ARN": secrets["DATABASE_URL"],
        "DAGSTER_PG_URL_SECRET_ARN": secrets["DAGSTER_PG_URL"],
        "ALERT_WEBHOOK_URL_SECRET_ARN": secrets["ALERT_WEBHOOK_URL"],
        "LANDING_URL": f"s3://{moto_aws['landing_bucket']}/drops",
        "DAGSTER_UI_URL": "https://dagster.example.org",
        "ALERT_SNS_TOPIC_ARN": "",
    }.items():
        monkeypatch.setenv(name, value)
    return {**moto_aws, "secrets": secrets}


def test_ecs_instance_storage_queue_limits_monitoring_and_launcher(ecs_env, database_url, query, tmp_path):
    with instance_from(ECS_DIR / "dagster.yaml", tmp_path / "home") as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert instance.get_runs() == []
        # The instance created Dagster's tables in the database DAGSTER_PG_URL names.
        assert query("SELECT to_regclass('runs') IS NOT NULL, to_regclass('event_logs') IS NOT NULL") == [
            (True, True)
        ]

        assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
        assert instance.compute_log_manager._s3_bucket == ecs_env["bucket"]

        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 12
        limits = {(limit["key"], json.dumps(limit.get("value"))): limit["limit"]
                  for limit in queue.tag_concurrency_limits}
        assert limits == {
            ("dagster/sensor_name", '"landing_sensor"'): 10,
            ("dagster/backfill", "null"): 4,
            ("dagster/schedule_name", '{"applyLimitPerUniqueValue": true}'): 1,
        }
        # Ingestion never takes every slot; the sensor's runs carry the tag the limit counts.
        assert limits[("dagster/sensor_name", '"landing_sensor"')] < queue.max_concurrent_runs
        assert "landing_sensor" in {sensor.name for sensor in defs.sensors}

        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 600
        assert instance.run_monitoring_max_runtime_seconds == 10800
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert not instance.run_retries_retry_on_asset_or_op_failure

        launcher = instance.run_launcher
        assert isinstance(launcher, EcsRunLauncher)
        assert launcher.use_current_ecs_task_config and launcher.container_name == "run"
        assert launcher.task_role_arn == os.environ["ECS_RUN_TASK_ROLE_ARN"]
        assert launcher.execution_role_arn == os.environ["ECS_EXECUTION_ROLE_ARN"]
        assert {s["name"]: s["valueFrom"] for s in launcher.secrets} == ecs_env["secrets"]
        assert launcher.secrets_tags == []  # no secret is injected just for carrying a tag


@pytest.fixture
def code_server(ecs_env, database_url, monkeypatch, tmp_path):
    """The code location's ECS service: `dagster code-server start`, reporting its image."""
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": database_url, "DAGSTER_CURRENT_IMAGE": IMAGE,
           "DAGSTER_HOME": str(tmp_path / "code_home")}
    log = open(tmp_path / "code_server.log", "w")
    command = ["code-server", "start", "-h", "127.0.0.1", "-p", str(port), "-m", "covid_platform.definitions",
               "-a", "defs", "--location-name", "covid_platform"]
    server = subprocess.Popen([Path(sys.executable).with_name("dagster"), *command], cwd=REPO, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    monkeypatch.setenv("DAGSTER_CODE_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_CODE_SERVER_PORT", str(port))
    deadline = time.monotonic() + 120
    while not listening(port):
        log_text = (tmp_path / "code_server.log").read_text
        assert server.poll() is None and time.monotonic() < deadline, log_text()
        time.sleep(0.5)
    yield server
    # As ECS stops a task: SIGTERM, then SIGKILL after its stop timeout (dagster's code server, SIGTERMed while
    # its gRPC server runs, has been seen not to exit), to the server and the code server it started.
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
    log.close()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def launch_through_the_queue(home: Path, tags: dict[str, str]) -> dg.DagsterRun:
    """A run of ingest_us_states made as the daemon makes one the landing sensor requested (from the code
    server's snapshots: the daemon does not import the code and has no DATABASE_URL), submitted to the queue,
    then dequeued and launched by the daemon's run-coordinator loop. Returns it once its task is started."""
    with instance_from(ECS_DIR / "dagster.yaml", home) as instance, WorkspaceProcessContext(
        instance, WorkspaceFileTarget(paths=[str(ECS_DIR / "workspace.yaml")])
    ) as workspace:
        request = workspace.create_request_context()
        assert request.has_code_location("covid_platform"), request.get_code_location_error("covid_platform")
        location = request.get_code_location("covid_platform")
        remote_job = location.get_repository("__repository__").get_full_job("ingest_us_states")
        plan = location.get_execution_plan(remote_job, {}, step_keys_to_execute=None, known_state=None)
        run = instance.create_run(
            job_name=remote_job.name, run_id=None, run_config={}, status=None,
            tags={**tags, "dagster/sensor_name": "landing_sensor"},
            root_run_id=None, parent_run_id=None, step_keys_to_execute=None,
            execution_plan_snapshot=plan.execution_plan_snapshot, job_snapshot=remote_job.job_snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot, asset_selection=None,
            asset_check_selection=None, resolved_op_selection=None, op_selection=None,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(), asset_graph=request.asset_graph,
        )
        instance.submit_run(run.run_id, request)
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.QUEUED

        list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(workspace))
        deadline = time.monotonic() + 60
        while "ecs/task_arn" not in instance.get_run_by_id(run.run_id).tags:
            assert time.monotonic() < deadline, [e.message for e in instance.all_logs(run.run_id)]
            time.sleep(0.5)
        launched = instance.get_run_by_id(run.run_id)
        assert launched.status == dg.DagsterRunStatus.STARTING
    return launched


def task_of(run: dg.DagsterRun) -> dict:
    return boto3.client("ecs").describe_tasks(
        cluster=run.tags["ecs/cluster"], tasks=[run.tags["ecs/task_arn"]], include=["TAGS"]
    )["tasks"][0]


def test_a_queued_run_is_launched_as_an_ecs_task(ecs_env, code_server, tmp_path):
    tags = {KEY_TAG: "us_states/2021-03-01.csv", ETAG_TAG: "0123abcd"}
    launched = launch_through_the_queue(tmp_path / "home", tags)
    task = task_of(launched)
    # In the daemon's cluster, subnet and security group (its own task's), on Fargate.
    assert task["clusterArn"] == ecs_env["cluster"] and task["launchType"] == "FARGATE"
    attachment = {d["name"]: d["value"] for d in task["attachments"][0]["details"]}
    assert attachment["subnetId"] == ecs_env["subnet"]
    groups = boto3.resource("ec2").NetworkInterface(attachment["networkInterfaceId"]).groups
    assert [g["GroupId"] for g in groups] == [ecs_env["security_group"]]
    assert {"key": "dagster/run_id", "value": launched.run_id} in task["tags"]
    assert {"key": "app", "value": "covid_platform"} in task["tags"]

    # The run's command: the run worker, handed this run and an instance that resolves its settings
    # (DAGSTER_PG_URL, ...) from the task's own environment.
    [override] = task["overrides"]["containerOverrides"]
    assert override["name"] == "run"
    assert override["command"][:3] == ["dagster", "api", "execute_run"]
    assert launched.run_id in override["command"][3] and "DAGSTER_PG_URL" in override["command"][3]
    assert len(json.dumps(task["overrides"])) < ECS_OVERRIDES_LIMIT

    # The task definition the launcher registered: the code server's image, roles, logs, size, and
    # every variable a run needs (secrets by reference only).
    definition = boto3.client("ecs").describe_task_definition(taskDefinition=task["taskDefinitionArn"])
    definition = definition["taskDefinition"]
    [container] = definition["containerDefinitions"]
    assert container["name"] == "run" and container["image"] == IMAGE
    assert definition["requiresCompatibilities"] == ["FARGATE"] and definition["networkMode"] == "awsvpc"
    assert (definition["cpu"], definition["memory"]) == ("1024", "4096")
    assert definition["taskRoleArn"] == os.environ["ECS_RUN_TASK_ROLE_ARN"]
    assert definition["executionRoleArn"] == os.environ["ECS_EXECUTION_ROLE_ARN"]
    assert container["logConfiguration"]["options"]["awslogs-group"] == ecs_env["log_group"]
    environment = {item["name"]: item["value"] for item in container["environment"]}
    assert environment["LANDING_URL"] == os.environ["LANDING_URL"]
    assert environment["DAGSTER_RUN_JOB_NAME"] == "ingest_us_states"
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == ecs_env["secrets"]
    assert not {"DATABASE_URL", "DAGSTER_PG_URL", "ALERT_WEBHOOK_URL"} & set(environment)
    assert set(environment) | {s["name"] for s in container["secrets"]} >= run_environment(ecs_config())


def container_environment(task: dict, home: Path) -> dict[str, str]:
    """What the run's container starts with: its task definition's environment, its secrets as ECS resolves
    them from Secrets Manager, and, standing in for the task role and AWS's endpoints, moto's."""
    definition = boto3.client("ecs").describe_task_definition(taskDefinition=task["taskDefinitionArn"])
    [container] = definition["taskDefinition"]["containerDefinitions"]
    secretsmanager = boto3.client("secretsmanager")
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(home),
        **{item["name"]: item["value"] for item in container["environment"]},
        **{s["name"]: secretsmanager.get_secret_value(SecretId=s["valueFrom"])["SecretString"]
           for s in container["secrets"]},
        **{name: os.environ[name]
           for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")},
    }


def test_the_run_task_ingests_a_file_with_its_task_definitions_environment_only(
    ecs_env, code_server, query, tmp_path
):
    key = "us_states/2020-12.csv"
    s3 = boto3.client("s3")
    body = helpers.nyt_states_slice("2020-12-01", "2020-12-07")
    etag = s3.put_object(Bucket=ecs_env["landing_bucket"], Key=f"drops/{key}", Body=body)["ETag"].strip('"')
    partition = partition_key(key, etag)
    home = tmp_path / "home"
    with instance_from(ECS_DIR / "dagster.yaml", home) as instance:
        instance.add_dynamic_partitions("us_states_files", [partition])
    launched = launch_through_the_queue(home, {KEY_TAG: key, ETAG_TAG: etag, "dagster/partition": partition})

    # The container's command, run as Fargate would run it: nothing from this process's environment.
    task = task_of(launched)
    [override] = task["overrides"]["containerOverrides"]
    container_home = tmp_path / "container"
    container_home.mkdir()
    environment = container_environment(task, container_home)
    done = subprocess.run(override["command"], env=environment, cwd=container_home, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    with instance_from(ECS_DIR / "dagster.yaml", home) as instance:
        status = instance.get_run_by_id(launched.run_id).status
        errors = [e.dagster_event.event_specific_data.error.message if e.dagster_event else e.message
                  for e in instance.all_logs(launched.run_id) if e.level >= 40]
    assert status == dg.DagsterRunStatus.SUCCESS, errors
    assert query("SELECT status FROM covid.ingested_files WHERE key = %s", (key,)) == [("loaded",)]
    assert query("SELECT count(DISTINCT date) FROM covid.national_daily") == [(7,)]
    # The steps' output reached the compute-log bucket the webserver reads.
    prefix = f"dagster/compute-logs/storage/{launched.run_id}/"
    logs = s3.list_objects_v2(Bucket=ecs_env["bucket"], Prefix=prefix)
    assert logs["KeyCount"] > 0, s3.list_objects_v2(Bucket=ecs_env["bucket"]).get("Contents")


def test_the_ecs_image_copies_this_deployment_in():
    dockerfile = (ECS_DIR / "Dockerfile").read_text()
    copies = re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.M)
    assert dict(copies) == {
        "deploy/ecs/dagster.yaml": "/opt/dagster/home/dagster.yaml",
        "deploy/ecs/workspace.yaml": "/opt/dagster/app/workspace.yaml",
    }
    assert all((REPO / source).is_file() for source, _ in copies)
    # The platform's image keeps its instance in DAGSTER_HOME and its workspace in the working directory.
    base = (REPO / "Dockerfile").read_text()
    assert "DAGSTER_HOME=/opt/dagster/home" in base and "WORKDIR /opt/dagster/app" in base
