"""Jobs on transformers causal LMs (`model: {family: hf, ...}`), from a config or a saved model.

Real transformers models, tiny: they train through `symopt_core.train` with the symmetric preset,
report per-class and MoE load metrics, classify under their own names, load from local files,
resume bit-identically, and refuse bad configs and unknown parameters with what to write instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from symopt_core.assets import Assets
from symopt_core.errors import ConfigError
from symopt_core.models.hf import HFCausalLM, build_hf_model
from symopt_core.models.hf_check import check_hf_model, describe
from symopt_core.params import describe_params
from symopt_core.spec import load_spec
from symopt_core.training import Event, load_checkpoint, train
from symopt_core.training.job_model import has_routed_experts
from tests.core import hf_models

_SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64}
LLAMA = {"model_type": "llama", "intermediate_size": 64, "num_key_value_heads": 2, **_SMALL}
MIXTRAL = {
    "model_type": "mixtral",
    "intermediate_size": 32,
    "num_key_value_heads": 2,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "output_router_logits": True,  # trains with transformers' load-balancing loss, as HF does
    **_SMALL,
}
# OPT's second MLP matrix, `fc2`, sits directly in the decoder layer: no rule knows it.
OPT = {"model_type": "opt", "ffn_dim": 64, "word_embed_proj_dim": 32, **_SMALL}
OPT_MAPPING = {"model.decoder.layers.*.fc2.weight": "hidden"}


def hf_job(model: dict[str, Any], **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"family": "hf", **model},
        "data": {"corpus": "shakespeare", "seq_len": 32},
        "optimizer": {"preset": "symmetric"},
        "schedule": {"kind": "constant"},
        "batch": {"size": 8},
        "steps": 80,
        "eval": {"every": 40, "batches": 2},
        "log_every": 20,
        "seed": 1,
    }
    spec.update(changes)
    return spec


@pytest.mark.parametrize("config", [LLAMA, MIXTRAL], ids=["llama", "mixtral"])
def test_a_transformers_model_from_a_config_learns_and_reports_its_classes(config, data_dir):
    events: list[Event] = []
    result = train(hf_job({"config": config}), report=events.append, data_root=data_dir)
    assert result.status == "succeeded"
    first, last = result.evals[0]["val_loss"], result.evals[-1]["val_loss"]
    assert last < first - 0.5, (first, last)  # from ln(65) ≈ 4.17 towards character statistics
    logs = [e.data["message"] for e in events if e.kind == "log"]
    assert logs[0].startswith(f"hf {config['model_type']} (config): ")
    data = [e for e in events if e.kind == "metrics"][-1].data
    for name in ("embedding", "lm_head", "attn_qkv", "attn_out", "vector"):
        assert f"grad_norm/{name}" in data, name
        assert f"update_rms/{name}" in data, name
    if config is MIXTRAL:
        for name in ("router", "expert_in", "expert_out"):
            assert f"update_rms/{name}" in data, name
        for key in ("moe/max_mean_load", "moe/load_cv", "moe/z_loss", "moe/layer1/max_mean_load"):
            assert key in data, key
        assert data["moe/max_mean_load"] >= 1.0
    else:
        assert "grad_norm/mlp_in" in data
        assert not any(key.startswith("moe/") for key in data)


@pytest.mark.parametrize("name", ["olmoe", "qwen3-moe", "gpt-oss"])
def test_routing_stats_agree_with_transformers_load_balancing_loss(name):
    """transformers' aux loss pools every layer: E·Σ_i (Σ_l c_li / (L·N)) (Σ_l P_li / L)."""
    model = HFCausalLM(hf_models.build(name), name)
    idx = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    output = model(idx, idx)
    stats = output.routing
    assert len(stats) == 2
    assert all(s.tokens == 24 and s.top_k == 2 for s in stats)
    assert all(int(s.counts.sum()) == 24 * 2 for s in stats)
    pooled_counts = torch.stack([s.counts.float() for s in stats]).sum(0) / (2 * 24)
    pooled_probs = torch.stack([s.mean_probs for s in stats]).mean(0)
    expected = model.hf(input_ids=idx, output_router_logits=True, use_cache=False).aux_loss
    torch.testing.assert_close(4 * (pooled_counts * pooled_probs).sum(), expected.detach())
    assert float(output.aux_loss) == 0.0  # the config does not ask for the aux loss in training


def test_the_aux_loss_is_transformers_own_when_the_config_asks_for_it():
    model = build_hf_model(load_spec(hf_job({"config": MIXTRAL})).model, vocab_size=65)
    idx = torch.randint(0, 65, (2, 16), generator=torch.Generator().manual_seed(0))
    output = model(idx, idx)
    expected = 0.001 * model.hf(input_ids=idx, output_router_logits=True, use_cache=False).aux_loss
    torch.testing.assert_close(output.aux_loss, expected)
    assert output.loss is not None
    assert output.ce_loss is not None
    torch.testing.assert_close(output.loss, output.ce_loss + output.aux_loss)
    with pytest.raises(ConfigError, match="exceeds max_position_embeddings=64"):
        model(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize("config", [{**LLAMA, "tie_word_embeddings": True}, MIXTRAL], ids=["tied", "mixtral"])
def test_the_wrapped_model_classifies_as_the_bare_transformers_model(config):
    spec = load_spec(hf_job({"config": config}))
    model = build_hf_model(spec.model, vocab_size=65)
    assert has_routed_experts(model) == (config is MIXTRAL)
    wrapped = {name.removeprefix("hf."): info for name, info in describe_params(model).items()}
    bare = describe_params(model.hf)
    assert {n: (i.param_class, i.layout) for n, i in wrapped.items()} == {
        n: (i.param_class, i.layout) for n, i in bare.items()
    }
    rows = describe(spec.model, "symmetric", {}, vocab_size=65)  # on the meta device
    assert [row["name"] for row in rows] == list(bare)
    assert [(row["class"], tuple(row["shape"])) for row in rows] == [
        (i.param_class.value, i.shape) for i in bare.values()
    ]
    if "tie_word_embeddings" in config:
        assert bare["model.embed_tokens.weight"].param_class == "tied_embedding"
        assert "lm_head.weight" not in bare


def test_a_saved_model_loads_from_its_path_trains_and_resumes_bit_identically(tmp_path, data_dir):
    torch.manual_seed(0)
    spec = load_spec(hf_job({"config": LLAMA}))
    saved = build_hf_model(spec.model, vocab_size=65).hf
    saved.save_pretrained(tmp_path / "models" / "mdl_abc123")
    assets = Assets(data_root=data_dir, uploads=tmp_path)
    job = hf_job({"path": "mdl_abc123"}, steps=8, eval={"every": 4, "batches": 2}, log_every=4)
    job["checkpoint"] = {"every": 4, "keep": 5}
    loaded = build_hf_model(load_spec(job).model, vocab_size=65, assets=assets)
    for name, tensor in saved.state_dict().items():
        assert torch.equal(loaded.hf.state_dict()[name], tensor), name

    events: list[Event] = []
    straight = train(job, run_dir=tmp_path / "straight", assets=assets, report=events.append)
    assert events[1].data["message"].startswith("hf mdl_abc123 (pretrained): ")
    polls = iter(range(1000))
    half = train(job, run_dir=tmp_path / "half", assets=assets, should_stop=lambda: next(polls) >= 4)
    assert (half.status, half.steps) == ("cancelled", 4)
    resumed = train(job, run_dir=tmp_path / "half", assets=assets, resume_from=half.checkpoint)
    assert resumed.steps == straight.steps == 8
    a, b = load_checkpoint(Path(straight.checkpoint)), load_checkpoint(Path(resumed.checkpoint))
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert resumed.evals == straight.evals

    with pytest.raises(ConfigError, match=r"data\.seq_len=128 exceeds max_position_embeddings=64"):
        check_hf_model(load_spec({**job, "data": {"seq_len": 128}}), assets)


def test_an_unclassified_parameter_names_itself_and_the_mapping_that_trains_it(data_dir):
    spec = hf_job({"config": OPT}, steps=4, eval={"every": 4, "batches": 1})
    for attempt in (lambda: check_hf_model(load_spec(spec)), lambda: train(spec, data_root=data_dir)):
        with pytest.raises(ConfigError) as caught:
            attempt()
        message = str(caught.value)
        assert (
            "model.decoder.layers.0.fc2.weight (32, 64), model.decoder.layers.1.fc2.weight (32, 64)"
            in message
        )
        assert 'optimizer: {mapping: {"model.decoder.layers.*.fc2.weight": "hidden"}}' in message
        assert "hf." not in message
    mapped = {**spec, "optimizer": {"preset": "symmetric", "mapping": OPT_MAPPING}}
    check_hf_model(load_spec(mapped))
    rows = {row["name"]: row for row in describe(load_spec(mapped).model, "symmetric", OPT_MAPPING)}
    assert rows["model.decoder.layers.1.fc2.weight"]["class"] == "hidden"
    assert train(mapped, data_root=data_dir).status == "succeeded"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "no_such_model"}, "Unknown model.config.model_type 'no_such_model'"),
        ({"model_type": "vit"}, "'vit' is not a causal language model"),
        (
            {"model_type": "bert", "hidden_size": 32, "num_attention_heads": 4},
            "attends in both directions .*is_decoder: true",
        ),
        ({**LLAMA, "hidden_sise": 48}, "hidden_sise is not a field of llama"),
        ({**LLAMA, "vocab_size": 10}, "vocab_size=10 is below the tokenizer's 65 tokens"),
    ],
    ids=["unknown", "not-causal", "encoder", "typo", "vocab"],
)
def test_a_bad_config_is_a_config_error_that_says_what_to_fix(config, message):
    with pytest.raises(ConfigError, match=message):
        check_hf_model(load_spec(hf_job({"config": config})), vocab_size=65)


def test_a_vocabulary_below_the_tokenizer_fails_the_job(data_dir):
    with pytest.raises(ConfigError, match="vocab_size=10 is below the tokenizer's 65 tokens"):
        train(hf_job({"config": {**LLAMA, "vocab_size": 10}}), data_root=data_dir)


def test_specs_and_the_training_package_import_without_transformers():
    code = (
        "import sys, torch; torch.set_num_threads(1); import symopt_core.spec, symopt_core.training; "
        "assert 'transformers' not in sys.modules, 'transformers was imported'"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


FSDP_STEPS = 3


def _fsdp_job() -> dict[str, Any]:
    job = hf_job({"config": LLAMA}, batch={"size": 4}, precision="float32")
    job["resources"] = {"workers": 2, "strategy": "fsdp"}
    return job


def _trained(data_dir: Path) -> dict[str, torch.Tensor]:
    """The parameters after FSDP_STEPS steps of the FSDP job, whole, on this process's ranks."""
    from symopt_core.training.loop import batch_shape, build_run, train_step
    from symopt_core.training.metrics import class_of_params

    spec = load_spec(_fsdp_job())
    run = build_run(spec, device=torch.device("cpu"), data_root=data_dir)
    assert len(run.model.blocks) == LLAMA["num_hidden_layers"]  # the FSDP units: decoder layers
    sharded = all(hasattr(p, "full_tensor") for p in run.model.parameters())
    assert sharded == (run.parallel.world_size > 1)
    classes = class_of_params(run.optimizer)
    for _ in range(FSDP_STEPS):
        train_step(run, batch_shape(spec, run.tokens), classes, log=False)
    return {
        name: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
        for name, p in run.model.named_parameters()
    }


def _fsdp_rank(rank: int, port: int, data_dir: Path, reference: Path, failures: Any) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        got, expected = _trained(data_dir), torch.load(reference, weights_only=True)
        assert got.keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-4, msg=name)
    except BaseException as error:  # reported to the parent: a child's assertion alone is lost
        failures.put(f"rank {rank}: {type(error).__name__}: {error}")
        raise
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fsdp_on_two_ranks_shards_the_decoder_layers_and_matches_one_process(tmp_path, data_dir):
    import torch.multiprocessing as mp

    from service.testing import free_port

    reference = tmp_path / "one-process.pt"
    torch.save(_trained(data_dir), reference)
    port = free_port()
    context = mp.get_context("spawn")
    failures = context.SimpleQueue()
    ranks = [
        context.Process(target=_fsdp_rank, args=(rank, port, data_dir, reference, failures))
        for rank in range(2)
    ]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=180)
    messages = []
    while not failures.empty():
        messages.append(failures.get())
    assert messages == []
    assert [process.exitcode for process in ranks] == [0, 0]
