import dagster as dg
from covid_platform_tests.test_sensor import *  # noqa
from covid_platform_tests.test_sensor import tick, put, instance  # fixtures

import pytest
@pytest.mark.parametrize("key", ["us_states/Report, Jan 1 [final] (v2) é.csv", "us_states/" + "x"*400 + ".CSV", "us_states/sub dir/a+b%20c.csv"])
def test_probe(instance, landing, resources, query, put, key):
    etag = put(key, helpers.nyt_states_slice("2020-12-01", "2020-12-03"))
    result, _ = tick(instance, landing, None)
    [request] = result.run_requests
    print(request.partition_key, len(request.partition_key))
    run = dg.materialize(helpers.ASSETS, selection=dg.AssetSelection.assets("raw_us_states").downstream(),
        partition_key=request.partition_key, tags=request.tags, instance=instance, resources=resources)
    assert run.success
    print(query("SELECT key, status, archive_key FROM covid.ingested_files"))
