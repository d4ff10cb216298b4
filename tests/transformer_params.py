"""Random parameters for transformer tests, drawn with NumPy instead of flax's initialisers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from toymodels.transformer import TransformerConfig, graphdef_for, param_shapes


def random_model(cfg: TransformerConfig, seed: int = 0):
    """(graphdef, params): random float32 parameters of the right shapes, drawn with numpy.

    Flax's initialisers cost about 0.4 s of XLA compilation per parameter tensor on this CPU, so the
    tests draw their own (nonzero biases and LayerNorm offsets too, which exercises more of the model);
    test_transformer.py's test_vmap_over_init_keys covers init_params itself."""
    rng = np.random.default_rng(seed)

    def draw(path, shape_dtype):
        name = jax.tree_util.keystr(path)
        shape = shape_dtype.shape
        if "scale" in name:
            values = 1.0 + 0.1 * rng.standard_normal(shape)
        elif "kernel" in name:
            values = rng.standard_normal(shape) / np.sqrt(shape[0])
        else:  # embeddings, biases
            values = 0.3 * rng.standard_normal(shape)
        return jnp.asarray(values, shape_dtype.dtype)

    return graphdef_for(cfg), jax.tree_util.tree_map_with_path(draw, param_shapes(cfg))
