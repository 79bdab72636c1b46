"""The batch-norm variants every command trains: one registry, no Keras import.

    from train.data import variants
    variants.COMPARED                 # ("none", "keras", "kbn"): make run's table, in order
    variants.NAMES                    # every name --bn accepts
    variants.VARIANTS["kbn-renorm"]   # its label, colour, line style, layer and options

`train/data/models.py` builds a variant's layer from `layer` and `options`;
`train/reports/plots.py` draws it with `color` and `style`. A new variant is one entry here.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Variant:
    """One batch-norm choice of the pipeline.

    Attributes:
        name: What `--bn` and the run folders call it.
        label: What a table or a legend says.
        layer: None (no BN), "keras" (`keras.layers.BatchNormalization`) or
            "kbn" (`kbn.BatchNormalization`).
        options: Extra arguments of kbn's layer.
        color, style: The variant's line in every plot.
    """

    name: str
    label: str
    layer: str = None
    options: dict = dataclasses.field(default_factory=dict)
    color: str = "black"
    style: str = "-"


_ALL = (
    Variant("none", "no batch norm", None, color="tab:red"),
    Variant("keras", "keras.layers.BatchNormalization", "keras", color="tab:blue"),
    # Dashed: it lies on top of keras.
    Variant("kbn", "kbn.BatchNormalization", "kbn", color="tab:green", style="--"),
    # Renorm clipping as the Batch Renormalization paper's final values (r in
    # [1/3, 3], |d| <= 5), for `python -m train.paper`'s E5.
    Variant("kbn-renorm", "kbn, batch renormalization", "kbn",
            {"renorm": True, "renorm_clipping": {"rmin": 1 / 3, "rmax": 3.0, "dmax": 5.0}},
            color="tab:purple"),
    # Ghost batches of 3: every batch must be a multiple of 3, and E5's digits
    # split (--validation-split 0.199: 1440 training and 357 validation samples,
    # the latter evaluated in chunks of 60 and 57) is one.
    Variant("kbn-ghost3", "kbn, ghost batches of 3", "kbn", {"virtual_batch_size": 3},
            color="tab:orange"),
)
VARIANTS = {variant.name: variant for variant in _ALL}
NAMES = tuple(VARIANTS)
# The three that `make run` (train.compare) and lr_sweep compare, in table order.
COMPARED = ("none", "keras", "kbn")
# Where BN goes (train/data/models.py) and the architectures around it: the other
# choices of a model, kept here so that parsing flags imports no Keras.
BN_POSITIONS = ("before", "after")
MODELS = ("mlp", "cnn")
