"""Progressive resizing, as FFCV trains ImageNet (``get_resolution`` in github.com/libffcv/ffcv-imagenet's
``train_imagenet.py``): small training crops early, when the network learns coarse features, larger ones later,
while validation keeps one size throughout (``--val-input-size``).

The training crop of epoch ``e`` (counted from 0) grows from ``START`` at epoch ``FIRST`` to ``END`` at ``LAST``:

    size(e) = START                                   if e <= FIRST
    size(e) = END                                     if e >= LAST
    size(e) = S * round(r(e) / S)                     otherwise, with
    r(e)    = START + (END - START) (e - FIRST) / (LAST - FIRST)

where ``S`` is the step (FFCV's: 32) and ``round`` goes to the nearest whole number, a half to the even one
(numpy's ``np.round``, which FFCV applies to ``np.interp``'s ``r(e)``; here ``r(e) / S`` is an exact fraction,
so a half is a half). FFCV rounds to the nearest multiple, not down: rounded down, its 160-to-192 ramp would
train at 160 until its last epoch. Here ``START`` and ``END`` must be multiples of ``S``, so every size lies
between them and none shrinks. FFCV's ResNet-50 configurations ramp from 160 to 192 between epochs 65 and 76 of
88 (so: 160 up to epoch 70, 192 from 71) and between 11 and 13 of 16 (160 up to 11, 192 from 12).
"""
import dataclasses
from fractions import Fraction

FFCV_STEP = 32


@dataclasses.dataclass(frozen=True)
class ProgressiveResize:
    """The training crop size of every epoch: ``start`` until ``first_epoch``, ``end`` from ``last_epoch`` on,
    FFCV's rounded linear ramp between; ``step`` divides ``start`` and ``end``."""

    start: int
    end: int
    first_epoch: int
    last_epoch: int
    step: int = FFCV_STEP

    def __post_init__(self):
        if not (0 < self.start <= self.end and self.start % self.step == 0 and self.end % self.step == 0
                and 0 <= self.first_epoch <= self.last_epoch):
            raise ValueError(f"not a progressive resize schedule: {self}")

    def size(self, epoch):
        """The side of epoch ``epoch``'s square training crops."""
        if epoch <= self.first_epoch:
            return self.start
        if epoch >= self.last_epoch:
            return self.end
        ramp = Fraction(self.start) + Fraction((self.end - self.start) * (epoch - self.first_epoch),
                                               self.last_epoch - self.first_epoch)
        return self.step * round(ramp / self.step)  # Fraction rounds a half to even, as numpy does

    def __str__(self):
        return (f"{self.start}->{self.end} over epochs {self.first_epoch}-{self.last_epoch} "
                f"(multiples of {self.step})")
