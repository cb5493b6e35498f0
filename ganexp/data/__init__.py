"""Training data: a cheap spec of what a data set looks like, and an endless batch source.

``data_spec(cfg)`` finds the files and says what the batches will be like, before any work
starts; ``build_data(cfg, batch_size, device, seed)`` loads them and returns a
:class:`BatchSource` whose ``spec`` is the same. Bad input of any kind is a
:class:`~ganexp.errors.ConfigError`.
"""

from ganexp.data.build import build_data, build_labelled, data_plan, data_spec, labelled_subset
from ganexp.data.spec import BatchSource, DataSpec
from ganexp.data.toy import mode_centers

__all__ = [
    "BatchSource",
    "DataSpec",
    "build_data",
    "build_labelled",
    "data_plan",
    "data_spec",
    "labelled_subset",
    "mode_centers",
]
