"""Model configuration: one dataclass that fully describes a PSB (or SAVi baseline) autoencoder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class PSBConfig:
    """Configuration of :class:`psb_rl.PSBAutoencoder`.

    The defaults are the CPU recipe of ``pretrain/train_psb.py``: environment frames (64×64) are
    resized to 32×32, 8×8 tokens per frame, 8 slots (background + up to 7 objects), W = 4. On a GPU use
    ``image_size=64``, ``feature_stride=2`` or 4, ``slot_dim`` 256, ``encoder_channels``/``decoder_channels``
    64–128 and ``num_blocks`` 4.
    """

    image_size: int | tuple[int, int] = 32
    """Input resolution: ``S`` (square) or ``(H, W)`` (e.g. an Atari playfield); frames of other sizes are
    resized by ``preprocess_frames``."""
    num_slots: int = 8
    """N: slots per time step (objects + background)."""
    slot_dim: int = 128
    """D: width of slots and frame tokens."""
    num_blocks: int = 3
    """M: number of PSB blocks."""
    num_heads: int = 4
    """Heads of the time-axis and object-axis self-attention."""
    window: int | None = 4
    """W: the bottom-up attention reaches frames with ``t - W < t' <= t`` in every block; None = unbounded.
    Each past step costs L frame tokens here, so W bounds the expensive part of a streaming step."""
    time_window: int | None = 4
    """Wt: the time-axis self-attention reaches slots with ``t - Wt < t' <= t`` in every block; None =
    unbounded. Each past step costs one slot here, so a long Wt is cheap. A frame's influence on the slots
    ends ``(W - 1) + M·(Wt - 1)`` steps later (M = ``num_blocks``). Configs stored without this field
    (older checkpoints) load with ``time_window = window``, the single window they were trained with."""
    time_bias_max_offset: int | None = None
    """Offsets ``t - t'`` above this share its relative-time bias (see :class:`psb_rl.model.TimeBias`):
    training clips of T frames teach offsets up to T - 1 only, and ``train_psb.py`` sets T - 1 here.
    None: the bias MLP is evaluated at every offset."""
    slot_init: str = "learned"
    """``"learned"`` (N learned vectors) or ``"random"`` (learned Gaussian, sampled per clip in training)."""
    encoder: str = "psb"
    """Slot module: ``"psb"`` (parallel, causal) or ``"savi"`` (recurrent baseline)."""
    encoder_channels: int = 64
    """Channels of the CNN frame encoder."""
    feature_stride: int = 4
    """Downsampling of the frame encoder: L = ceil(H / feature_stride) · ceil(W / feature_stride) tokens per frame."""
    decoder_channels: int = 32
    """Channels of the spatial-broadcast decoder."""
    decoder_grid: int = 8
    """Smallest side of the grid each slot is broadcast to before upsampling: the decoder upsamples
    ``k = floor(log2(min(H, W) / decoder_grid))`` times from a ``ceil(H / 2^k) × ceil(W / 2^k)`` grid and
    crops the centre ``H × W`` (exactly ``decoder_grid`` and no crop when the ratio is a power of two)."""
    mlp_ratio: int = 4
    """Hidden width of the block MLP is ``mlp_ratio * slot_dim``."""
    inverted_attention: bool = True
    """Ablation switch: False replaces the inverted (softmax over slots) bottom-up attention by a plain
    softmax over the keys."""
    time_encoding: str = "relative"
    """``"relative"`` (bias of the offset t'-t) or ``"absolute"`` (ablation: sinusoid of t added to slots)."""
    max_cache_len: int = 256
    """For ``window=None``: the longest episode the streaming encoder caches (allocated up front) before
    raising; prefer a finite ``window`` for long episodes."""
    savi_iterations: int = 2
    """SAVi baseline: slot-attention iterations per frame."""
    colour_values: bool = False
    """Append each token's mean input colour (its patch, pooled at the feature stride) to the frame tokens
    and add a learned projection of it to the bottom-up *values* (not the keys) of every block, or of the
    SAVi corrector. The default CNN tokens barely separate colours and slots decode objects in grey
    (input and decoded chroma correlate at 0.14); with this on, colour is bound and PSNR rises by 2-4 dB,
    but on this CPU recipe some seeds end with one slot holding several objects (docs/pretraining.md), so it is
    off by default. Keys stay colour-free: colour in the keys made slots specialise by colour."""
    background_slot: bool = False
    """Slot 0 is the background: its RGB is a learned full-resolution image (initialised to the training
    frames' per-pixel median, see :meth:`psb_rl.PSBAutoencoder.set_background`) and only its alpha comes
    from the slot. The background then costs no slot capacity, so the other slots compete for what differs
    from it (on Atari frames the static background is ~98% of the pixels and otherwise wins the MSE)."""
    decoder: str = "broadcast"
    """``"broadcast"``: the spatial-broadcast CNN decoder (every slot decoded at full resolution);
    ``"blob"``: each slot decodes one colour and one soft box-shaped blob (centre, size, sharpness and
    strength, see :class:`psb_rl.model.BlobDecoder`): a slot can only draw one compact region, so it must
    bind one object, and decoding costs O(N·H·W) elementwise operations instead of N CNN passes."""
    difference_input: bool = False
    """The frame encoder also sees each frame minus a stored reference background image (the training
    frames' per-pixel median): a per-frame, causal prior on where objects are, at no streaming cost."""

    def _type_problems(self) -> list[str]:
        """Fields whose value is not of the field's type (a hand-edited or damaged stored config)."""
        import numbers
        import typing

        def integral(v: Any) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        problems = []
        for name, hint in typing.get_type_hints(type(self)).items():
            value = getattr(self, name)
            allowed = typing.get_args(hint) or (hint,)
            if value is None and type(None) in allowed:
                continue
            if name == "image_size" and isinstance(value, tuple):
                ok = all(integral(v) for v in value)
            elif bool in allowed:
                ok = isinstance(value, bool)
            elif int in allowed:
                ok = integral(value)
            elif float in allowed:
                ok = isinstance(value, int | float) and not isinstance(value, bool)
            else:
                ok = isinstance(value, tuple(t for t in allowed if isinstance(t, type)))
            if not ok:
                problems.append(f"{name} must be {getattr(hint, '__name__', hint)}, got {value!r}")
        return problems

    def __post_init__(self) -> None:
        if isinstance(self.image_size, list | tuple):  # JSON gives lists; (S, S) stays a tuple
            if len(self.image_size) != 2:
                raise ValueError(f"invalid PSBConfig: image_size must be a positive int or (H, W), got {self.image_size!r}")
            self.image_size = tuple(self.image_size)
        problems = self._type_problems()
        if problems:
            raise ValueError("invalid PSBConfig: " + "; ".join(problems))
        if isinstance(self.image_size, tuple):
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        problems = []
        size = self.image_size
        if not (isinstance(size, int) or (isinstance(size, tuple) and len(size) == 2)) or min(self.image_hw) < 1:
            problems.append(f"image_size must be a positive int or (H, W), got {size!r}")
        if self.feature_stride not in (1, 2, 4, 8):
            problems.append(f"feature_stride must be 1, 2, 4 or 8, got {self.feature_stride}")
        if self.decoder_grid < 1 or self.decoder_grid > min(self.image_hw):
            problems.append(f"decoder_grid must be between 1 and the image's smaller side, got {self.decoder_grid} "
                            f"for image_size={size!r}")
        if self.num_heads >= 1 and self.slot_dim % self.num_heads:
            problems.append(f"slot_dim={self.slot_dim} must be divisible by num_heads={self.num_heads}")
        for name in ("window", "time_window"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if self.time_bias_max_offset is not None and self.time_bias_max_offset < 0:
            problems.append(f"time_bias_max_offset must be >= 0 or None, got {self.time_bias_max_offset}")
        if self.slot_init not in ("learned", "random"):
            problems.append(f"slot_init must be 'learned' or 'random', got {self.slot_init!r}")
        if self.encoder not in ("psb", "savi"):
            problems.append(f"encoder must be 'psb' or 'savi', got {self.encoder!r}")
        if self.decoder not in ("broadcast", "blob"):
            problems.append(f"decoder must be 'broadcast' or 'blob', got {self.decoder!r}")
        if self.time_encoding not in ("relative", "absolute"):
            problems.append(f"time_encoding must be 'relative' or 'absolute', got {self.time_encoding!r}")
        for name in ("num_slots", "slot_dim", "num_blocks", "num_heads", "encoder_channels", "decoder_channels"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if problems:
            raise ValueError("invalid PSBConfig: " + "; ".join(problems))

    @property
    def image_hw(self) -> tuple[int, int]:
        """``(H, W)`` of the model's input frames."""
        size = self.image_size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    @property
    def feature_hw(self) -> tuple[int, int]:
        """``(h, w)`` of the frame-feature grid (each strided convolution rounds up)."""
        height, width = self.image_hw
        return -(-height // self.feature_stride), -(-width // self.feature_stride)

    @property
    def feature_size(self) -> int:
        """Side of a square frame-feature grid (see :attr:`feature_hw` for non-square frames)."""
        height, width = self.feature_hw
        if height != width:
            raise ValueError(f"feature_size is defined for square frames only; use feature_hw {self.feature_hw}")
        return height

    @property
    def token_dim(self) -> int:
        """Width of a frame token: D, plus 3 patch-colour channels with ``colour_values``."""
        return self.slot_dim + (3 if self.colour_values else 0)

    @property
    def num_tokens(self) -> int:
        """L: tokens per frame."""
        height, width = self.feature_hw
        return height * width

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PSBConfig:
        """Build a config from :meth:`to_dict` output, rejecting unknown fields with a clear error.

        Configs stored before ``time_window`` existed had one window for both attentions: they get
        ``time_window = window`` (and no bias clamp), so older checkpoints compute exactly as before.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown PSBConfig fields {unknown}; known fields: {sorted(fields)}")
        if "time_window" not in data:
            data = {**data, "time_window": data.get("window", fields["window"].default),
                    "time_bias_max_offset": data.get("time_bias_max_offset")}
        return cls(**data)
