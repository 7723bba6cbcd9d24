"""`covid-platform stream`: the MQTT stream bridge. Messages on a dataset's declared topic filter are batched
into CSV objects under `<dataset>/stream/` in the landing zone, where the landing sensor ingests them like any
dropped file; a message is acknowledged to the broker only once the object holding it is written."""
