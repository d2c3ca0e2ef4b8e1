"""tunesmith: fine-tune open causal language models on your own data.

The public entry point is :func:`train`; the command line is ``tunesmith`` (``python -m tunesmith``).
Heavy dependencies (torch, transformers) are imported lazily so ``import tunesmith`` is cheap.
"""

__version__ = "0.1.0"


def train(config, overrides=None, **kwargs):
    """Run a training job; see :func:`tunesmith.run.train`."""
    from .run import train as _train

    return _train(config, overrides, **kwargs)


__all__ = ["train", "__version__"]
