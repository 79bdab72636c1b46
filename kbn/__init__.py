"""kbn: batch normalization for Keras 3 that you can read, trust and speed up.

    from kbn import BatchNormalization
"""

__version__ = "0.1.0"

from kbn.batch_normalization import BatchNormalization  # noqa: E402

__all__ = ["BatchNormalization", "__version__"]
