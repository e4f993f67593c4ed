"""Data across nodes: datasets, partitions (IID and non-IID) and per-round sampling.

ds = data.load("digits")
nd, summary = data.distribute_with_summary(ds, 16, method="dirichlet", alpha=0.1)
nd = data.distribute(ds, 16, method="dirichlet", alpha=0.1, local_test_fraction=0.2)  # + nd.test_x/test_y/test_sizes
xb, yb, mask = data.sample_batch(key, nd.x[0], nd.y[0], nd.sizes[0], 32)
"""

from redeem_jax.data.datasets import TEXT_MODULES, Dataset, list_datasets, load, register_dataset
from redeem_jax.data.loaders import DataError, load_images, read_idx
from redeem_jax.data.partition import METHODS, PartitionSummary, local_test_split, partition, partition_summary
from redeem_jax.data.ratings import movielens, planted, read_movielens
from redeem_jax.data.sampling import (
    NodeData,
    distribute,
    distribute_with_summary,
    sample_batch,
    sample_indices,
    sample_network_batches,
    sample_node_batches,
    stack_parts,
    subset_indices,
)

# Ratings (task "ratings": x = (user, item) ids, y = ratings) for rj.recommend; registered here,
# after datasets.py is whole, since ratings.py builds on its Dataset.
register_dataset("ratings", planted)
register_dataset("movielens", movielens)

__all__ = [
    "Dataset",
    "load",
    "list_datasets",
    "register_dataset",
    "TEXT_MODULES",
    "load_images",
    "DataError",
    "read_idx",
    "read_movielens",
    "METHODS",
    "partition",
    "local_test_split",
    "partition_summary",
    "PartitionSummary",
    "NodeData",
    "distribute",
    "distribute_with_summary",
    "stack_parts",
    "sample_indices",
    "sample_batch",
    "sample_node_batches",
    "subset_indices",
    "sample_network_batches",
]
