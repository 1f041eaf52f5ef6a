"""Full re-inference at its fastest: the baseline every decision is measured against, and every fallback.

Two choices, both measured on batches whose outputs are kept (no work is thrown away):
- batch size: 16 (the fastest for VGG16 on a 2-core CPU) unless one batch takes under 20 ms, then
  larger (up to 256), so that small models are not dominated by per-call overhead;
- memory layout: for 2-D convolutional models on the CPU the occluded images go in channels-last from
  the first batch, through the model's channels-last twin (`channels_last_twin`: the caller's modules
  with convolution weights copied in channels-last; the model itself is never changed): PyTorch's CPU
  convolutions then take their channels-last kernels (measured here: ResNet18 1.2x, MobileNetV3-large
  1.7x faster at batch 16). Runs long enough to compare try the caller's layout on two batches and keep
  whichever is faster.
"""

from __future__ import annotations

import time
import weakref

import numpy as np
import torch
from torch import nn

from krypton.engine.gather import PaddedCache
from krypton.modes.naive import DEFAULT_BATCH
from krypton.modes.occlusions import Collector, Occlusions
from krypton.pipeline import channels_last_twin, guard

MAX_BATCH = 256
SMALL_BATCH_S = 0.02  # a batch faster than this is mostly overhead: make batches larger
PROBE_SIZE = 8  # a probe's batch, timed after a warm-up batch of the same shape (a first call at a new batch
# shape pays kernel setup: lcnet_050 timed 4 ms/position at a new shape, 1.9 warm); ResNet18 runs 15.4
# ms/position at batch 8, 14.4 at 16
LAYOUT_TRIAL_S = 1.0  # compare both layouts only when the rest of the run takes longer than this


class FastestNaive:
    """Runs occluded copies through the model in batches, adapting batch size and layout as it goes."""

    def __init__(
        self,
        model: nn.Module,
        occ: Occlusions,
        collector: Collector,
        batch_size: int | None = None,
        clean: torch.Tensor | None = None,
    ):
        self.model, self.occ, self.collector, self.clean = model, occ, collector, clean
        self.fixed_batch = batch_size is not None
        self.batch_size = batch_size or DEFAULT_BATCH
        self.cache = PaddedCache()
        self.seconds_per_position: float | None = None
        matters = _layout_matters(model, occ.image)
        self.layout = "channels_last" if matters else "contiguous"
        self.positions = 0
        self._batches = 0
        self._twin: channels_last_twin.Twin | None | bool = False  # False: not looked up yet
        self._sizes: set[int] = set()  # batch shapes run so far (the first of each pays kernel setup)
        self._trial_done = not matters
        self._trial: str | None = None  # the other layout while it is being timed
        self._trial_batches = 0

    @property
    def measured(self) -> bool:
        """Whether `seconds_per_position` comes from a batch after the first (the first warms up and may
        have been a one-position probe: a pessimistic figure)."""
        return self._batches > 1

    def run(self, order: np.ndarray, max_batches: int | None = None, size: int | None = None) -> None:
        """Evaluate the positions of `order` not yet done, in that order (at most `max_batches` batches,
        of `size` positions when given)."""
        pending = order[~self.collector.done[order]]
        first, count = 0, 0
        while first < len(pending) and (max_batches is None or count < max_batches):
            trial = self._trial
            layout = trial if trial is not None else self.layout
            take = size or self.batch_size
            if take > 1 and self._twin_unchecked(layout):
                take -= 1  # the clean image rides along: the batch keeps its shape (no new kernel setup)
            index = pending[first : first + take]
            first += len(index)
            count += 1
            seconds = self._batch(index, layout) / len(index)
            if trial is not None:
                self._trial_step(seconds)
            elif self._batches > 1:  # the first batch warms up allocators and kernels
                self.seconds_per_position = seconds
                self._adapt(len(pending) - first)
            elif self.seconds_per_position is None:
                self.seconds_per_position = seconds  # a pessimistic first figure

    def probe(self, order: np.ndarray) -> None:
        """Measure the time per position on few positions (each costs naive's full price when the engine
        is the faster path): a timed batch of PROBE_SIZE after a warm-up batch of the same shape (unless
        one ran), and while a timed batch is mostly per-call overhead (under SMALL_BATCH_S) the same at
        the grown batch size, so that a small model's figure is its warm, batched speed."""
        size = PROBE_SIZE
        while not self.collector.done[order].all():
            if size not in self._sizes:
                self.run(order, max_batches=1, size=size)  # kernel setup for this batch shape
            self.run(order, max_batches=1, size=size)
            spp = self.seconds_per_position or 0.0
            if self.fixed_batch or spp * size >= SMALL_BATCH_S or size >= self.batch_size:
                return
            size = self.batch_size  # grown by `_adapt`

    def _batch(self, index: np.ndarray, layout: str) -> float:
        wanted = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        images = self.occ.images(index, self.cache, wanted)
        twin = self._twin_for(layout)
        shape = len(index)
        started = time.perf_counter()
        try:
            if twin is None:
                out = guard.call(self.model, images)
            elif twin.verified:
                out = guard.call(twin.module, images)
            else:
                out, shape = self._first_twin_batch(twin, images), shape + 1
        except Exception:
            if layout != "channels_last":
                raise
            out = self._in_the_model_s_layout(images)
        seconds = time.perf_counter() - started
        self.collector.add(index, out)
        self.positions += len(index)
        self._batches += 1
        self._sizes.add(shape)
        return seconds

    def _twin_for(self, layout: str) -> channels_last_twin.Twin | None:
        """The twin channels-last batches run through (looked up once: weights do not change in a run)."""
        if layout != "channels_last":
            return None
        if self._twin is False:
            self._twin = channels_last_twin.twin(self.model)
        return self._twin if isinstance(self._twin, channels_last_twin.Twin) else None

    def _twin_unchecked(self, layout: str) -> bool:
        twin = self._twin_for(layout)
        return twin is not None and not twin.verified

    def _first_twin_batch(self, twin: channels_last_twin.Twin, images: torch.Tensor) -> torch.Tensor:
        """The batch through a twin not yet checked, the clean image riding along as an extra item: when
        the twin's output on it is the model's, the twin serves from now on; else the model as given
        recomputes the batch and the twin is dropped."""
        clean = self.clean if self.clean is not None else guard.call(self.model, self.occ.image)
        both = guard.call(twin.module, torch.cat([self.occ.image.to(images.dtype), images]).contiguous(
            memory_format=torch.channels_last))  # fmt: skip
        if isinstance(both, torch.Tensor) and channels_last_twin.agrees(both[:1].reshape(1, -1), clean.reshape(1, -1)):
            twin.verified = True
            return both[1:]
        channels_last_twin.reject(self.model)
        self._twin = None
        return guard.call(self.model, images)

    def _in_the_model_s_layout(self, images: torch.Tensor) -> torch.Tensor:
        """The model failed on channels-last input (its code `view`s a convolution's output, which then
        has channels-last strides: MobileViT): this batch and every later one, in this run and the next,
        go in the default layout; an error of the model's own is raised from that call."""
        _LAYOUT_FAILS.add(self.model)
        self._twin, self.layout, self._trial, self._trial_done = None, "contiguous", None, True
        return guard.call(self.model, images.contiguous())

    def _adapt(self, remaining: int) -> None:
        spp = self.seconds_per_position or 0.0
        if not self.fixed_batch and spp * self.batch_size < SMALL_BATCH_S and self.batch_size < MAX_BATCH:
            self.batch_size = min(MAX_BATCH, self.batch_size * 4)
        if not self._trial_done and remaining >= 3 * self.batch_size and spp * remaining > LAYOUT_TRIAL_S:
            self._trial_done = True
            self._trial = "contiguous" if self.layout == "channels_last" else "channels_last"
            self._trial_batches = 0

    def _trial_step(self, seconds: float) -> None:
        """Two batches in the other layout (one to warm up); keep it if the second was faster."""
        self._trial_batches += 1
        if self._trial_batches < 2:
            return
        if self._trial is not None and seconds < (self.seconds_per_position or float("inf")):
            self.layout, self.seconds_per_position = self._trial, seconds
        self._trial = None


_LAYOUT_FAILS: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models that raised on channels-last input


def _layout_matters(model: nn.Module, image: torch.Tensor) -> bool:
    if model in _LAYOUT_FAILS:
        return False
    return image.dim() == 4 and image.device.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in model.modules())
