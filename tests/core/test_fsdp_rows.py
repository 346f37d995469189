"""SymOpt's FSDP row gather (optim/fsdp.py) against the readable DTensor version, on 2 gloo ranks.

Shapes cover what fully_shard produces: rows that split evenly, unevenly (257 rows: 129 + 128),
fewer rows than ranks (1 row: rank 1 holds none), 3-D expert stacks, and two dtypes in one call.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

from service.testing import free_port
from symopt_core.errors import ConfigError
from symopt_core.optim.fsdp import gather_rows, gather_rows_reference, local, local_rows

SHAPES = [((8, 4), torch.float32), ((257, 3), torch.float32), ((1, 5), torch.float32),
          ((5, 2, 3), torch.float32), ((6, 4), torch.float64)]  # fmt: skip


def _check_on_rank(rank: int, port: int, failures: mp.SimpleQueue) -> None:  # type: ignore[type-arg]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        mesh = init_device_mesh("cpu", (2,))
        generator = torch.Generator().manual_seed(0)
        wholes = [torch.randn(shape, generator=generator, dtype=dtype) for shape, dtype in SHAPES]
        params = [distribute_tensor(whole, mesh, [Shard(0)]) for whole in wholes]
        shards = [local(param) * 2 for param in params]  # a momentum-like tensor of the same rows
        fast = gather_rows(shards, params)
        reference = gather_rows_reference(shards, params)
        for whole, param, got, expected in zip(wholes, params, fast, reference, strict=True):
            assert torch.equal(got, expected)
            assert torch.equal(got, whole * 2)
            assert torch.equal(local_rows(got, param), local(param) * 2)
        replicated = distribute_tensor(wholes[0], mesh, [torch.distributed.tensor.Replicate()])
        with pytest.raises(ConfigError, match="placements"):
            gather_rows([local(replicated)], [replicated])
    except BaseException as error:  # reported to the parent: a child's assertion alone is lost
        failures.put(f"rank {rank}: {type(error).__name__}: {error}")
        raise
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_batched_row_gather_equals_one_full_tensor_per_parameter() -> None:
    context = mp.get_context("spawn")
    failures = context.SimpleQueue()
    port = free_port()
    processes = [context.Process(target=_check_on_rank, args=(rank, port, failures)) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    messages = []
    while not failures.empty():
        messages.append(failures.get())
    assert messages == []
    assert [process.exitcode for process in processes] == [0, 0]
