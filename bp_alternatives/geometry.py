"""Angles and norms of pytrees seen as flat vectors.

Convention for a zero vector: its angle with any vector is 90 degrees. A zero vector
has no component along any direction, so ``cos`` is taken as 0: a rule that sends no
signal to a stage (a zero update, a zero-initialised synthetic gradient) reads as
orthogonal to the gradient, not as a missing value, and epoch means stay finite. The
norms (``global_norm``) tell a zero vector from an orthogonal one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def flatten(tree) -> jax.Array:
    """Every leaf of ``tree`` raveled and concatenated: ``[sum of leaf sizes]``."""
    return jnp.concatenate(
        [jnp.ravel(leaf) for leaf in jax.tree_util.tree_leaves(tree)]
    )


def angle_deg(u, v) -> jax.Array:
    """Angle in degrees (``[]``, in ``[0, 180]``) between two pytrees (or arrays) as
    flat vectors; 90 if either is zero (see the module docstring)."""
    u, v = flatten(u), flatten(v)
    nu, nv = jnp.linalg.norm(u), jnp.linalg.norm(v)
    nonzero = (nu > 0) & (nv > 0)
    cos = jnp.where(nonzero, jnp.dot(u, v) / jnp.where(nonzero, nu * nv, 1.0), 0.0)
    return jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))


def global_norm(tree) -> jax.Array:
    """The Euclidean norm of all leaves of ``tree`` together (``[]``)."""
    return jnp.sqrt(
        sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree))
    )
