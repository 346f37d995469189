"""A job's token data, from its spec's `data` section: a corpus or an uploaded dataset, tokenized.

Every case goes through the token cache (data/token_cache.py): the first job on a machine to ask
for some data tokenizes it, every later job and trial maps the stored ids.
"""

from __future__ import annotations

from ..assets import Assets
from ..data import TokenDataset, corpus_source, dataset_source, tokenized_dataset
from ..spec import JobSpec

__all__ = ["build_job_data"]


def build_job_data(spec: JobSpec, assets: Assets) -> TokenDataset:
    """The train and val tokens of `spec.data`."""
    data = spec.data
    if data.dataset is not None:
        source = dataset_source(assets.dataset_dir(data.dataset), data.dataset)
    else:
        assert data.corpus is not None  # the spec fills in shakespeare when neither is given
        source = corpus_source(data.corpus, data_root=assets.data_root, options=dict(data.options))
    # The model tokenizer is the one saved with the model at model.path (the spec checks it is set).
    model_dir = assets.model_dir(spec.model.path) if data.tokenizer == "model" and spec.model.path else None
    return tokenized_dataset(
        source,
        data.tokenizer,
        cache_dir=assets.token_cache(),
        val_fraction=data.val_fraction,
        vocab_size=data.vocab_size,
        model_dir=model_dir,
    )
