"""kbn: batch normalization for Keras 3 that you can read, trust and speed up.

    from kbn import BatchNormalization
    kbn.recalibrate(model, x_train)          # precise inference statistics (Algorithm 2)
    kbn.fold_batchnorm(model)                # a copy with BN folded into its neighbours
    kbn.convert(model)                       # a copy with kbn's layer in place of Keras's
"""

__version__ = "0.1.0"

from kbn.batch_normalization import BatchNormalization  # noqa: E402
from kbn.convert import convert  # noqa: E402
from kbn.fold import fold_batchnorm  # noqa: E402
from kbn.recalibrate import recalibrate  # noqa: E402

__all__ = ["BatchNormalization", "convert", "fold_batchnorm", "recalibrate", "__version__"]
