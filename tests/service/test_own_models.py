"""Users' own models and data through the live service: transformers models from inline configs
and uploads, an uploaded dataset with a trained BPE tokenizer, on real Ray, SQLite and
PostgreSQL, the client and the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from service.client import Client
from service.store import Store
from service.store.migrate import upgrade
from service.testing import ROOT, live_service, one_thread_env
from symopt_core.data.sources import data_root

from ..specs import tiny_job
from ..waiting import LIMIT, wait_for
from .conftest import POSTGRES, make_tenant, own_postgres_database
from .live import Api, SharedService, cancel_once_past, wait_for_checkpoint

LLAMA = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}
MIXTRAL = {**LLAMA, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2}


def hf_job(config: dict[str, Any], **changes: Any) -> dict[str, Any]:
    changes.setdefault("optimizer", {"preset": "symmetric"})
    return tiny_job(model={"family": "hf", "config": config}, **changes)


def log_lines(api: Api, job_id: str) -> list[str]:
    body = api.http.get(f"/v1/jobs/{job_id}/logs", params={"limit": 1000}).json()
    return [event["message"] for event in body["data"]]


def train_llama_and_mixtral(api: Api) -> None:
    ids = {name: api.submit(hf_job(config, steps=10, log_every=5)) for name, config in
           (("llama", LLAMA), ("mixtral", MIXTRAL))}  # fmt: skip
    for name, job_id in ids.items():
        job = api.finished(job_id)
        assert job["status"] == "succeeded", (name, job["error"])
        names = {s["name"] for s in api.http.get(f"/v1/jobs/{job_id}/metrics").json()["series"]}
        assert {"train_loss", "val_loss", "grad_norm/attn_qkv", "update_rms/embedding"} <= names, name
        if name == "mixtral":
            assert {"grad_norm/expert_in", "grad_norm/router"} <= names
            assert any(n.startswith("moe/") for n in names), sorted(names)
        assert any(line.startswith("hf mixtral" if name == "mixtral" else "hf llama") for line in
                   log_lines(api, job_id))  # fmt: skip


def test_hf_models_from_inline_configs_train_as_jobs_on_sqlite(api: Api) -> None:
    train_llama_and_mixtral(api)


@pytest.fixture(scope="module")
def postgres_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    if POSTGRES is None:
        pytest.fail("SYMOPT_TEST_DATABASE_URL is not set: scripts/test sets it to this machine's PostgreSQL")
    with own_postgres_database() as url:
        upgrade(url)
        store = Store.connect(url)
        try:
            key = make_tenant(store, "own-models").key
        finally:
            store.close()
        home = tmp_path_factory.mktemp("pg-service")
        with live_service(home, url, env={"SYMOPT_RAY_NUM_CPUS": "2"}) as running:
            api = Api(running, key)
            yield api
            api.http.close()


@pytest.mark.skipif(POSTGRES is None, reason="runs where scripts/test points SYMOPT_TEST_DATABASE_URL")
def test_hf_models_from_inline_configs_train_as_jobs_on_postgresql(postgres_api: Api) -> None:
    train_llama_and_mixtral(postgres_api)


# OPT keeps its second MLP matrix, `fc2`, directly in the decoder layer: no rule claims it.
OPT = {**LLAMA, "model_type": "opt", "ffn_dim": 64, "word_embed_proj_dim": 32}
del OPT["intermediate_size"], OPT["num_key_value_heads"]
OPT_MAPPING = {"model.decoder.layers.*.fc2.weight": "hidden"}


def test_an_unclassifiable_model_is_422_with_the_mapping_to_add(api: Api) -> None:
    refused = api.http.post("/v1/jobs", json=hf_job(OPT))
    assert refused.status_code == 422
    message = refused.json()["message"]
    assert "model.decoder.layers.0.fc2.weight (32, 64)" in message
    assert '"model.decoder.layers.*.fc2.weight": "hidden"' in message
    table = api.http.post("/v1/models:classify", json={"model": {"family": "hf", "config": OPT}})
    assert table.status_code == 422
    table = api.http.post(
        "/v1/models:classify", json={"model": {"family": "hf", "config": OPT}, "mapping": OPT_MAPPING}
    )
    assert table.status_code == 200, table.text
    classes = {row["name"]: row["class"] for row in table.json()["params"]}
    assert classes["model.decoder.layers.0.fc2.weight"] == "hidden"
    assert classes["model.decoder.layers.0.self_attn.q_proj.weight"] == "attn_qkv"
    assert table.json()["summary"]["hidden"]["tensors"] == 2
    mapped = hf_job(OPT, optimizer={"preset": "symmetric", "mapping": OPT_MAPPING})
    assert api.http.post("/v1/jobs", json=mapped).status_code == 201


# -- an uploaded dataset with a trained BPE tokenizer ---------------------------------------


@pytest.fixture(scope="module")
def notes_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 120 KiB of Python sources, one JSON document per file."""
    root = data_root()
    assert root is not None, "scripts/test exports SYMOPT_DATA_DIR (scripts/data-dir.sh)"
    sources = sorted(Path(sys.prefix).glob("lib/python3*/json/*.py")) + sorted(
        Path(sys.prefix).glob("lib/python3*/email/*.py")
    )
    if not sources:  # a venv: the standard library is under the base prefix
        sources = sorted(Path(sys.base_prefix).glob("lib/python3*/json/*.py"))
        sources += sorted(Path(sys.base_prefix).glob("lib/python3*/email/*.py"))
    path = tmp_path_factory.mktemp("notes") / "notes.jsonl"
    with path.open("w") as out:
        for source in sources[:40]:
            out.write(json.dumps({"path": source.name, "text": source.read_text()}) + "\n")
    return path


def test_an_uploaded_dataset_with_a_bpe_feeds_two_jobs_from_one_cache(
    shared_service: SharedService, notes_jsonl: Path, tmp_path: Path
) -> None:
    tenant = shared_service.tenant()
    with Client(tenant.url, tenant.api_key) as client:
        dataset = client.upload_dataset(notes_jsonl)
        assert dataset["format"] == "jsonl"
        data = {"dataset": dataset["id"], "tokenizer": "bpe", "vocab_size": 2048, "seq_len": 32}
        spec = tiny_job(data=None, steps=6, log_every=3)
        spec["data"] = data
        first = client.submit(spec)
        assert first.wait(progress=False).data["status"] == "succeeded", first.data["error"]
        second = client.submit({**spec, "seed": 1})
        assert second.wait(progress=False).data["status"] == "succeeded", second.data["error"]
        api = Api(shared_service, tenant.api_key)
        [built] = [line for line in log_lines(api, first.id) if line.startswith("data:")]
        [reused] = [line for line in log_lines(api, second.id) if line.startswith("data:")]
        assert "tokenized now" in built
        assert "read from the token cache" in reused
        [tokenizer] = client.dataset(dataset["id"])["tokenizers"]
        assert tokenizer["vocab_size"] == 2048
        saved = client.download_tokenizer(dataset["id"], tokenizer["key"], tmp_path / "tokenizer.json")
        from tokenizers import Tokenizer

        assert Tokenizer.from_file(str(saved)).get_vocab_size() == 2048
        refused = api.http.delete(f"/v1/datasets/{dataset['id']}")
        assert refused.status_code == 204  # both jobs have finished: nothing uses it


# -- an uploaded pretrained model, fine-tuned and resumed ----------------------------------


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama saved by save_pretrained, with a byte-level BPE tokenizer of its own."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory = tmp_path_factory.mktemp("pretrained")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([Path(transformers.__file__).read_text()] * 2, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>")
    fast.save_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(**{**LLAMA, "vocab_size": len(fast)})
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def test_an_uploaded_model_fine_tunes_and_resumes_on_the_same_trajectory(
    shared_service: SharedService, pretrained: Path
) -> None:
    tenant = shared_service.tenant()
    api = Api(shared_service, tenant.api_key)
    with Client(tenant.url, tenant.api_key) as client:
        model = client.upload_model(pretrained)
    assert (model["model_type"], model["has_tokenizer"]) == ("llama", True)
    spec = tiny_job(steps=60, log_every=5, eval={"every": 1000, "batches": 1})
    spec["model"] = {"family": "hf", "path": model["id"]}
    spec["data"] = {**spec["data"], "tokenizer": "model"}
    straight = api.finished(api.submit(spec))
    assert straight["status"] == "succeeded", straight["error"]
    # The same run, killed after its first checkpoint and resumed from it by the scheduler.
    killed = api.submit({**spec, "steps": 1_000_000, "checkpoint": {"every": 20, "keep": 1}})
    os.kill(wait_for_checkpoint(api, killed), signal.SIGKILL)
    cancel_once_past(api, killed, attempt=2, step=60)
    expected = dict(zip(*api.series(straight["id"], "train_loss"), strict=True))
    resumed = dict(zip(*api.series(killed, "train_loss"), strict=True))
    assert {step: resumed[step] for step in expected} == expected  # bit for bit
    assert api.http.delete(f"/v1/models/uploads/{model['id']}").status_code == 204


def test_the_cli_uploads_lists_and_removes(
    shared_service: SharedService, notes_jsonl: Path, pretrained: Path, tmp_path: Path
) -> None:
    tenant = shared_service.tenant()
    env = one_thread_env(SYMOPT_URL=tenant.url, SYMOPT_API_KEY=tenant.api_key)

    def symopt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=LIMIT,
        )  # fmt: skip

    uploaded = symopt("datasets", "upload", str(notes_jsonl), "--name", "notes")
    assert uploaded.returncode == 0, uploaded.stderr
    dataset_id = uploaded.stdout.strip()
    listing = symopt("datasets", "list")
    assert dataset_id in listing.stdout
    assert "notes" in listing.stdout
    model = symopt("models", "upload", str(pretrained), "--output", "json")
    assert model.returncode == 0, model.stderr
    assert json.loads(model.stdout)["model_type"] == "llama"
    assert symopt("datasets", "rm", dataset_id).returncode == 0
    gone = symopt("datasets", "show", dataset_id)
    assert gone.returncode == 2
    assert "No dataset" in gone.stderr
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        (folder / name).write_text(f"document {name}\n" * 50)
    tarred = symopt("datasets", "upload", str(folder), "--output", "json")
    assert tarred.returncode == 0, tarred.stderr
    assert (json.loads(tarred.stdout)["format"], json.loads(tarred.stdout)["documents"]) == ("tar", 2)
    bad = symopt("datasets", "upload", str(ROOT / "README.md"), "--format", "jsonl")
    assert bad.returncode == 2
    assert "line 1" in bad.stderr


def test_an_upload_cut_off_mid_stream_leaves_nothing(shared_service: SharedService) -> None:
    tenant = shared_service.tenant()
    api = Api(shared_service, tenant.api_key)
    incoming = shared_service.home / "artifacts" / ".incoming"

    def in_flight() -> tuple[int, ...]:
        return tuple(sorted(p.stat().st_size for p in incoming.iterdir())) if incoming.exists() else ()

    host, port = tenant.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as connection:
        head = (
            f"POST /v1/datasets?format=text HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {tenant.api_key}\r\nContent-Type: application/octet-stream\r\n"
            "Content-Length: 1000000\r\n\r\n"
        )
        connection.sendall(head.encode() + b"x" * 50_000)
        # The service is writing the body to disk: then the client goes away.
        wait_for(lambda: sum(in_flight()) >= 50_000 or None, progress=in_flight, what="the upload to land")
    wait_for(lambda: not in_flight() or None, progress=in_flight, what="the cut-off upload to be removed")
    assert api.http.get("/v1/datasets").json()["data"] == []
