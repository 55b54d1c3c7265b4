"""Where the work runs: a batch sharded over devices, and a leading seed axis."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


def data_mesh(data_parallel: bool, batch_size: int):
    """(mesh, batch sharding, replicated sharding) over all devices, or Nones.

    ``jax.devices()``: every device of every process -- this host's alone, or, after
    ``jax.distributed.initialize()`` on several hosts, all of theirs (one global mesh,
    so gradients are averaged across hosts too). ValueError when ``batch_size`` does
    not divide over the devices.
    """
    if not data_parallel:
        return None, None, None
    devices = jax.devices()
    if batch_size % len(devices):
        raise ValueError(
            f"trainer.batch_size={batch_size} must be divisible by the number of "
            f"devices ({len(devices)}) for trainer.data_parallel=true"
        )
    mesh = Mesh(np.array(devices), ("data",))
    return mesh, NamedSharding(mesh, P("data")), NamedSharding(mesh, P())


def replicate(x, sharding: NamedSharding) -> jax.Array:
    """A full copy of host array ``x`` on every device of ``sharding``'s mesh.

    Each process fills only the devices it can address, from its own copy of ``x``
    (every host loads the same dataset), so this also builds the global array of a
    multi-host mesh, where ``jax.device_put`` of a host array cannot reach the other
    hosts' devices.
    """
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def replicate_tree(tree, sharding: NamedSharding):
    """:func:`replicate` of every leaf of ``tree``."""
    return jax.tree_util.tree_map(
        lambda a: replicate(a, sharding), jax.device_get(tree)
    )


def seed_axis(keys: jax.Array) -> Callable:
    """``over(f, in_axes)``: ``f`` over a leading seed axis (``in_axes``: 0 or None
    per argument), such that each seed's numbers do not depend on the other seeds.

    ``jax.vmap`` for the ``threefry2x32`` PRNG. Any other implementation (``rbg``,
    ``unsafe_rbg``: ``jax_default_prng_impl``) gets a ``lax.map``, one seed after the
    other in the same program: JAX batches their ``rng_bit_generator`` by drawing
    every seed's bits from one of the keys (jax-ml/jax#19085, PR #20094), so under
    ``vmap`` a seed's run would change with the seeds beside it.
    """
    impl = str(jax.random.key_impl(keys))
    if impl == "threefry2x32":
        return lambda f, in_axes: jax.vmap(f, in_axes=in_axes)
    print(
        f"PRNG {impl}: the seeds run one after another in one program (lax.map), "
        "as vmap would draw every seed's random bits from one key"
    )
    return _map_over_seeds


def _map_over_seeds(f: Callable, in_axes: tuple[int | None, ...]) -> Callable:
    """``jax.vmap(f, in_axes)`` computed as a ``lax.map`` over the seed axis."""

    def mapped(*args):
        def one(per_seed):
            it = iter(per_seed)
            return f(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes)))

        return jax.lax.map(one, tuple(a for a, ax in zip(args, in_axes) if ax == 0))

    return mapped
