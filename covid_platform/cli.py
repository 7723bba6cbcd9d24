"""`covid-platform`: run the platform locally on its embedded defaults, or drop a file into the landing zone."""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

from dagster_aws.s3 import S3Resource

from covid_platform.datasets import DATASETS
from covid_platform.lib import embedded
from covid_platform.resources.landing import LandingZone

SAMPLE = ("us_states", "sample/nyt-us-states-2021-01-01_2021-02-14.csv")


def sqlalchemy_url(database_url: str) -> str:
    """dagster-postgres goes through SQLAlchemy, whose default PostgreSQL driver (psycopg 3) is not installed."""
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", database_url)


def dev(state_dir: Path, port: int) -> int:
    """`dagster dev` (UI + daemon) with an embedded PostgreSQL and a local landing folder unless
    DATABASE_URL / LANDING_URL say otherwise; the sample file is dropped so the first run starts at once."""
    env = dict(os.environ)
    if not env.get("DATABASE_URL"):
        _, urls = embedded.start(state_dir / "pgdata", ("covid", "dagster"))
        env["DATABASE_URL"] = urls["covid"]
        env.setdefault("DAGSTER_PG_URL", sqlalchemy_url(urls["dagster"]))
        print(f"Embedded PostgreSQL running in {state_dir / 'pgdata'}")
    env.setdefault("DAGSTER_PG_URL", sqlalchemy_url(env["DATABASE_URL"]))
    env.setdefault("LANDING_URL", (state_dir / "landing").resolve().as_uri())
    env.setdefault("DAGSTER_HOME", str((state_dir / "dagster_home").resolve()))
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile("dagster.yaml", home / "dagster.yaml")
    print(f"Landing zone: {env['LANDING_URL']}")

    dataset, name = SAMPLE
    sample = resources.files("covid_platform.sample_data").joinpath(f"{dataset}.csv")
    with sample.open("rb") as body:
        LandingZone(url=env["LANDING_URL"], s3=S3Resource()).put(f"{dataset}/{name}", body)
    print(f"Dropped the sample file as {dataset}/{name}; open http://127.0.0.1:{port} to watch it load")
    process = subprocess.Popen([sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-p", str(port)], env=env)
    # `dagster dev` shuts its webserver, daemon and code servers down cleanly on SIGINT; pass a
    # SIGTERM on as one, then wait, so the embedded server stops only after its clients have gone.
    signal.signal(signal.SIGTERM, lambda *_: process.send_signal(signal.SIGINT))
    while True:
        try:
            code = process.wait()
            break
        except KeyboardInterrupt:
            continue  # the terminal sent SIGINT to the whole group: dagster dev is already stopping
    return code  # an embedded server stops as this process exits


def drop(path: Path, dataset: str, name: str | None) -> int:
    if dataset not in DATASETS:
        sys.exit(f"Unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    url = os.environ.get("LANDING_URL") or Path(".covid_platform/landing").resolve().as_uri()
    with open(path, "rb") as body:
        LandingZone(url=url, s3=S3Resource()).put(f"{dataset}/{name or path.name}", body)
    print(f"Dropped {path} as {dataset}/{name or path.name} in {url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="covid-platform", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("dev", help="run the UI and daemon on the embedded defaults")
    run.add_argument("--state-dir", type=Path, default=Path(".covid_platform"))
    run.add_argument("--port", type=int, default=3000, help="port of the web UI")
    put = commands.add_parser("drop", help="put a CSV file into the landing zone")
    put.add_argument("path", type=Path)
    put.add_argument("dataset", choices=sorted(DATASETS))
    put.add_argument("--name", help="object name under the dataset prefix (default: the file's name)")
    args = parser.parse_args(argv)
    if args.command == "dev":
        return dev(args.state_dir, args.port)
    return drop(args.path, args.dataset, args.name)


if __name__ == "__main__":
    sys.exit(main())
