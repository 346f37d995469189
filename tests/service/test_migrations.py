"""Alembic revisions against the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import optuna
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

from .conftest import previous_revision

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


def test_optuna_tables_in_the_same_database_are_left_alone(own_database_url):
    # Optuna first, as a database shared with `optuna-dashboard` has it: its real tables and its
    # own `alembic_version`. A database of this test's own, so no other test ever sees them.
    storage = optuna.storages.RDBStorage(own_database_url)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "kept")
    optuna_version = storage.get_current_version()
    storage.engine.dispose()
    upgrade(own_database_url)
    assert differences(own_database_url) == []
    assert {"alembic_version", "studies", "trials"} <= tables(own_database_url)
    engine = create_engine(own_database_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == optuna_version
    assert current_revision(engine) == head_revision()
    engine.dispose()
    downgrade(own_database_url, "base")  # ours go, Optuna's stay
    assert tables(own_database_url) & OURS == set()
    reopened = optuna.storages.RDBStorage(own_database_url, skip_compatibility_check=False)
    assert reopened.get_study_id_from_name("kept") == study_id
    reopened.engine.dispose()


def test_a_production_database_behind_head_is_refused_with_the_command_to_run(own_database_url, tmp_path):
    upgrade(own_database_url, previous_revision())
    if own_database_url.startswith("sqlite"):
        # The embedded default migrates itself: a SQLite file behind head comes back at head.
        ensure_schema(own_database_url, migrate=True)
        engine = create_engine(own_database_url)
        assert current_revision(engine) == head_revision()
        engine.dispose()
        return
    with pytest.raises(DatabaseBehindError, match="symopt migrate"):
        ensure_schema(own_database_url, migrate=False)
    app = create_app(Settings(database_url=own_database_url, home=tmp_path))
    with pytest.raises(DatabaseBehindError), TestClient(app):
        pass
