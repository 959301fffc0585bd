"""Stage freezing shared by every backbone: a mixin over ``stage_layers()``."""

from __future__ import annotations

from typing import Any

from common.errors import ModelError


class StageFreezing:
    """Mixin for ``paddle.nn.Layer`` models that define ``stage_layers() -> list[list[Layer]]``.

    Group 0 is the stem, group i the i-th stage. ``freeze_stages(n)`` freezes the first ``n``
    groups: their parameters get ``stop_gradient = True`` (optimizers skip them, no gradient is
    computed) and their batch norms stay in inference mode, normalising with the pretrained
    running statistics and never updating them, even after ``model.train()``.
    """

    _frozen_stages = 0

    def stage_layers(self) -> list[list[Any]]:  # pragma: no cover - defined by each model
        raise NotImplementedError

    def prefix_layer(self, n: int) -> Any:  # pragma: no cover - defined by each model
        """A ``paddle.nn.Layer`` that computes groups ``[0, n)`` of :meth:`stage_layers`.

        It shares this model's parameters; ``forward_suffix(prefix_layer(n)(x), n)`` equals
        ``forward(x)``.
        """
        raise NotImplementedError

    def forward_suffix(self, h: Any, n: int) -> Any:  # pragma: no cover - defined by each model
        """Logits from ``h``, the output of the first ``n`` groups (see :meth:`prefix_layer`)."""
        raise NotImplementedError

    def _check_split(self, n: int) -> int:
        groups = len(self.stage_layers())
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= groups:
            raise ModelError(f"a model split needs n in [1, {groups}], got {n!r}")
        return n

    @property
    def frozen_stages(self) -> int:
        """How many groups of :meth:`stage_layers` are frozen (0 = none)."""
        return self._frozen_stages

    def freeze_stages(self, n: int) -> None:
        """Freeze the stem (``n >= 1``) and the first ``n - 1`` stages; ``n = 0`` unfreezes all."""
        groups = self.stage_layers()
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(groups):
            raise ModelError(f"freeze_stages: n must be an integer in [0, {len(groups)}], got {n!r}")
        for index, group in enumerate(groups):
            frozen = index < n
            for layer in group:
                for name, param in layer.named_parameters():
                    if name.endswith(("_mean", "_variance")):
                        continue  # running statistics are never trained
                    param.stop_gradient = frozen
                    param.trainable = not frozen
        self._frozen_stages = n
        self._apply_frozen_modes()

    def _apply_frozen_modes(self) -> None:
        for group in self.stage_layers()[: self._frozen_stages]:
            for layer in group:
                layer.eval()

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Enter training mode, keeping frozen stages (see :meth:`freeze_stages`) in eval mode."""
        result = super().train(*args, **kwargs)  # type: ignore[misc]
        self._apply_frozen_modes()
        return result
