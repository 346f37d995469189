"""Alembic revisions against the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text

from service.api import create_app
from service.errors import DatabaseBehindError
from service.settings import Settings
from service.store.migrate import (
    VERSION_TABLE,
    current_revision,
    downgrade,
    ensure_schema,
    head_revision,
    upgrade,
)
from service.store.models import Base

OURS = {table.name for table in Base.metadata.sorted_tables}


def differences(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, kind, *_: kind != "table" or name in OURS,
            },
        )
        found = compare_metadata(context, Base.metadata)
    engine.dispose()
    return list(found)


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    return names


def test_head_matches_the_models_and_survives_a_round_trip(database_url):
    # The fixture migrated the database to head.
    assert differences(database_url) == []
    assert OURS | {VERSION_TABLE} <= tables(database_url)
    downgrade(database_url, "base")
    assert tables(database_url) & OURS == set()
    upgrade(database_url)
    assert differences(database_url) == []
    engine = create_engine(database_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_optuna_tables_in_the_same_database_are_left_alone(database_url):
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        connection.execute(text("INSERT INTO alembic_version VALUES ('v3.2.0.a')"))
        connection.execute(
            text("CREATE TABLE studies (study_id INTEGER PRIMARY KEY, study_name VARCHAR(512))")
        )
    upgrade(database_url)
    assert differences(database_url) == []
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "v3.2.0.a"
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(text("DROP TABLE studies"))
    engine.dispose()


def test_a_production_database_behind_head_is_refused_with_the_command_to_run(database_url, tmp_path):
    if database_url.startswith("sqlite"):
        # The embedded default migrates itself: a SQLite file at base comes back at head.
        downgrade(database_url, "base")
        ensure_schema(database_url, migrate=True)
        return
    downgrade(database_url, "base")
    with pytest.raises(DatabaseBehindError, match="symopt migrate"):
        ensure_schema(database_url, migrate=False)
    app = create_app(Settings(database_url=database_url, home=tmp_path))
    with pytest.raises(DatabaseBehindError), TestClient(app):
        pass
    upgrade(database_url)
