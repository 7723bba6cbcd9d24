"""covid_platform: public-health CSV drops turned into clean PostgreSQL tables by Dagster assets."""
