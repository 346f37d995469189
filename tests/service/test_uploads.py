"""Uploaded datasets and models over HTTP, with a real database (SQLite and PostgreSQL) behind
the API: upload, list, read, delete, tenant isolation, and every bad input leaving nothing."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api import create_app
from service.settings import Settings

from ..specs import tiny_job
from .conftest import make_tenant

NOTES = "".join(json.dumps({"id": i, "text": f"note {i}: " + "lorem ipsum " * 20}) + "\n" for i in range(40))


def upload(client, tenant, body: bytes, **params):
    return client.post("/v1/datasets", params=params, content=body, headers=tenant.headers)


def artifacts(client) -> Path:
    return client.app.state.settings.resolved_artifact_root()


def left_behind(client) -> list[str]:
    """Files an upload left under the artifact root: datasets, models, bodies in flight."""
    root = artifacts(client)
    return sorted(
        str(p.relative_to(root))
        for folder in ("datasets", "models", ".incoming")
        if (root / folder).exists()
        for p in (root / folder).iterdir()
    )


def dataset_job(dataset_id: str, **data):
    spec = tiny_job(steps=4)
    spec["data"] = {"dataset": dataset_id, "tokenizer": "char", "seq_len": 16, **data}
    return spec


def test_a_dataset_uploads_lists_reads_and_deletes(client, alice):
    body = NOTES.encode()
    response = upload(
        client, alice, body, format="jsonl", name="notes", sha256=hashlib.sha256(body).hexdigest()
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["id"].startswith("ds_")
    assert (dataset["name"], dataset["format"], dataset["text_field"]) == ("notes", "jsonl", "text")
    assert dataset["documents"] == 40
    assert dataset["size_bytes"] == len(body)
    assert dataset["sha256"] == hashlib.sha256(body).hexdigest()
    listed = client.get("/v1/datasets", headers=alice.headers).json()["data"]
    assert [d["id"] for d in listed] == [dataset["id"]]
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=alice.headers).json()["tokenizers"] == []
    assert (artifacts(client) / "datasets" / dataset["id"]).is_dir()
    assert client.delete(f"/v1/datasets/{dataset['id']}", headers=alice.headers).status_code == 204
    assert client.get(f"/v1/datasets/{dataset['id']}", headers=alice.headers).status_code == 404
    assert left_behind(client) == []


def test_every_format_uploads(client, alice):
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table({"body": ["first document", "second one"], "n": [1, 2]}), sink)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, text in (("b.txt", "bee"), ("a.txt", "ay")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text.encode()))
    cases = [
        ({"format": "text"}, b"plain text, one document\n", 1),
        ({"format": "parquet", "text_field": "body"}, sink.getvalue(), 2),
        ({"format": "tar"}, archive.getvalue(), 2),
    ]
    for params, body, documents in cases:
        response = upload(client, alice, body, **params)
        assert response.status_code == 201, (params, response.text)
        assert response.json()["documents"] == documents


def test_another_tenants_dataset_is_not_found_nor_usable(client, alice, bob):
    dataset_id = upload(client, alice, NOTES.encode(), format="jsonl").json()["id"]
    assert client.get(f"/v1/datasets/{dataset_id}", headers=bob.headers).status_code == 404
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=bob.headers).status_code == 404
    assert client.get("/v1/datasets", headers=bob.headers).json()["data"] == []
    response = client.post("/v1/jobs", json=dataset_job(dataset_id), headers=bob.headers)
    assert response.status_code == 422
    assert f"data.dataset: no upload {dataset_id}" in response.json()["message"]
    assert client.post("/v1/jobs", json=dataset_job(dataset_id), headers=alice.headers).status_code == 201


BAD_UPLOADS = [
    ({"format": "jsonl"}, b'{"text": "fine"}\n{"text": "fine"}\n{"text": oops}\n', "line 3"),
    ({"format": "jsonl"}, b'{"text": "fine"}\n{"body": "no text"}\n', "line 2"),
    ({"format": "jsonl", "text_field": "body"}, b'{"body": null}\n', "line 1"),
    ({"format": "text"}, b"caf\xe9 is latin-1", "UTF-8"),
    ({"format": "parquet"}, b"PAR1 this is not parquet", "Parquet"),
    ({"format": "tar"}, b"not a tar archive at all" * 40, "tar"),
    ({"format": "jsonl"}, b"\n\n", "no documents"),
]


@pytest.mark.parametrize(("params", "body", "named"), BAD_UPLOADS, ids=[case[2] for case in BAD_UPLOADS])
def test_a_malformed_upload_is_422_naming_where_and_stores_nothing(client, alice, params, body, named):
    response = upload(client, alice, body, **params)
    assert response.status_code == 422, response.text
    assert named in response.json()["message"]
    assert client.get("/v1/datasets", headers=alice.headers).json()["data"] == []
    assert left_behind(client) == []


def test_a_wrong_sha256_is_422_and_stores_nothing(client, alice):
    response = upload(client, alice, NOTES.encode(), format="jsonl", sha256="0" * 64)
    assert response.status_code == 422
    assert "not the declared" in response.json()["message"]
    assert left_behind(client) == []


def test_an_upload_over_the_limit_is_413_and_stores_nothing(database_url, tmp_path):
    settings = Settings(database_url=database_url, home=tmp_path / "home", max_upload_bytes=1000)
    with TestClient(create_app(settings)) as client:
        alice = make_tenant(client.app.state.store, "alice")
        declared = upload(client, alice, b"x" * 1001, format="text")
        assert declared.status_code == 413

        def chunks():
            for _ in range(20):
                yield b"y" * 100

        streamed = client.post("/v1/datasets", content=chunks(), headers=alice.headers)
        assert streamed.status_code == 413
        assert left_behind(client) == []


def test_a_dataset_too_small_for_one_sequence_is_422_at_submission(client, alice):
    dataset_id = upload(client, alice, b"tiny", format="text").json()["id"]
    response = client.post("/v1/jobs", json=dataset_job(dataset_id), headers=alice.headers)
    assert response.status_code == 422
    assert "too small for one sequence of data.seq_len=16" in response.json()["message"]


def test_a_dataset_in_use_is_not_deleted(client, alice):
    dataset_id = upload(client, alice, NOTES.encode(), format="jsonl").json()["id"]
    job_id = client.post("/v1/jobs", json=dataset_job(dataset_id), headers=alice.headers).json()["id"]
    refused = client.delete(f"/v1/datasets/{dataset_id}", headers=alice.headers)
    assert refused.status_code == 409
    assert f"job {job_id}" in refused.json()["detail"]
    assert client.get(f"/v1/datasets/{dataset_id}", headers=alice.headers).status_code == 200
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=alice.headers).status_code == 202
    assert client.delete(f"/v1/datasets/{dataset_id}", headers=alice.headers).status_code == 204


# -- models -------------------------------------------------------------------------------------

LLAMA = {
    "model_type": "llama",
    "vocab_size": 300,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


def model_tar(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(directory, arcname=".")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    import transformers

    directory = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(**LLAMA)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def upload_model(client, tenant, body: bytes, **params):
    return client.post("/v1/models/uploads", params=params, content=body, headers=tenant.headers)


def test_a_model_uploads_and_a_job_names_it(client, alice, bob, tiny_llama):
    response = upload_model(client, alice, model_tar(tiny_llama), name="tiny-llama")
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["id"].startswith("mdl_")
    assert (model["model_type"], model["has_tokenizer"]) == ("llama", False)
    assert "config.json" in model["files"]
    spec = {**tiny_job(steps=4), "model": {"family": "hf", "path": model["id"]}}
    assert client.post("/v1/jobs", json=spec, headers=alice.headers).status_code == 201
    refused = client.post("/v1/jobs", json=spec, headers=bob.headers)
    assert refused.status_code == 422
    assert f"model.path: no upload {model['id']}" in refused.json()["message"]
    with_its_tokenizer = {**spec, "data": {**spec["data"], "tokenizer": "model"}}
    refused = client.post("/v1/jobs", json=with_its_tokenizer, headers=alice.headers)
    assert refused.status_code == 422
    assert "has no tokenizer files" in refused.json()["message"]
    listed = client.get("/v1/models/uploads", headers=alice.headers).json()["data"]
    assert [m["id"] for m in listed] == [model["id"]]
    assert client.get(f"/v1/models/uploads/{model['id']}", headers=bob.headers).status_code == 404


def tar_of(members: dict[str, bytes], *, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


T5 = json.dumps({"model_type": "t5", "d_model": 32}).encode()
BAD_MODELS = [
    (tar_of({"weights.safetensors": b"x"}), "no config.json"),
    (tar_of({"config.json": json.dumps(LLAMA).encode()}), "no weights"),
    (tar_of({"config.json": T5, "model.safetensors": b"x"}), "not a causal language model"),
    (tar_of({"../escape/config.json": b"{}"}), "inside the archive"),
    (tar_of({"config.json": json.dumps(LLAMA).encode()}, link="model.safetensors"), "regular files"),
    (b"not a tar" * 100, "not a tar archive"),
]


@pytest.mark.parametrize(("body", "named"), BAD_MODELS, ids=[case[1] for case in BAD_MODELS])
def test_a_bad_model_upload_is_422_and_stores_nothing(client, alice, body, named):
    response = upload_model(client, alice, body)
    assert response.status_code == 422, response.text
    assert named in response.json()["message"]
    assert left_behind(client) == []
