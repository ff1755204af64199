"""The base class of defenses (training-lifecycle plugins)."""

from __future__ import annotations

from typing import ClassVar

from locrob.configurable import Configurable


class Defense(Configurable):
    """Base of defense plugins.

    A subclass is a ``@dataclass`` whose fields are its parameters, sets ``name``, and
    implements only the lifecycle hooks it needs, each marked ``@hookimpl``:
    ``prepare_model``, ``transform_batch``, ``loss_terms``, ``after_step``, ``on_epoch_end``
    (see :class:`locrob.hookspecs.TrainingSpec`), taking only the arguments it uses (pluggy
    passes hook arguments by name). Parameter values are checked in
    ``__post_init__`` (use :func:`locrob.configurable.check`).

    ``prepare_model`` also runs when a checkpoint trained with the defense is loaded (before
    its weights), so it must leave the model ready for evaluation.
    """

    kind: ClassVar[str] = "defense"
