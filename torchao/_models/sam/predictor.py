"""SamPredictor: encode an image once, then predict masks for many prompts."""

from __future__ import annotations

import numpy as np
import torch

from torchao._models.sam.cuda_graph import CapturedCall
from torchao._models.sam.decoding import PROMPT_BUCKETS, BatchedDecoder
from torchao._models.sam.modeling.sam import Sam
from torchao._models.sam.transforms import ResizeLongestSide

POINT_LABELS = (-1, 0, 1)  # ignored (padding), background, foreground


class SamPredictor:
    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.decoder = BatchedDecoder(sam_model)  # eager until optimize()
        self.captured_encoder: CapturedCall | None = None  # batch 1, after optimize()
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        self.is_image_set = False
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """image: numpy [H, W, 3] in ``image_format`` ('RGB' or 'BGR'): uint8 0..255, or
        float 0..1, scaled to uint8 as the official predictor does (see image_to_uint8)."""
        check_numpy_image(image)
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        self.set_torch_image(self.transform_image(image), tuple(image.shape[:2]))

    def transform_image(self, image: np.ndarray) -> torch.Tensor:
        """numpy [H, W, 3] in the model's channel order -> [1, 3, H', W'] (0..255, longest
        side the encoder's img_size) on the model's device, as set_torch_image takes it."""
        resized = self.transform.apply_image(image)
        return torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]

    @torch.no_grad()
    def set_torch_image(
        self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """transformed_image: [1, 3, H, W], values 0..255, longest side = the encoder's img_size."""
        check_torch_image(transformed_image, self.model.image_encoder.img_size)
        features = self.encode(self.model.preprocess(transformed_image))
        self.set_features(features, original_image_size, tuple(transformed_image.shape[-2:]))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images [B, 3, S, S] -> encoder features [B, C, He, We]; after
        :meth:`optimize` with ``capture_encoder``, a batch of one replays a CUDA graph."""
        graph = self.captured_encoder
        if graph is not None and graph.accepts(images):
            return graph(images)
        return self.model.image_encoder(images)

    def set_features(
        self,
        features: torch.Tensor,
        original_size: tuple[int, ...],
        input_size: tuple[int, ...],
    ) -> None:
        """Use precomputed encoder output for the next predictions (e.g. one image of a batch
        encoded elsewhere). features: [1, C, He, We]; original_size: the image's (H, W);
        input_size: its (H', W') after ResizeLongestSide."""
        if features.dim() != 4 or features.shape[0] != 1:
            raise ValueError(f"features must be [1, C, He, We], got {tuple(features.shape)}")
        self.reset_image()
        self.original_size = tuple(int(s) for s in original_size)
        self.input_size = tuple(int(s) for s in input_size)
        self.features = features
        self.is_image_set = True

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prompts for one object in original-image pixels: point_coords [P, 2] (x, y),
        point_labels [P] (1 foreground, 0 background, -1 ignored), box [4] (x0, y0, x1, y1;
        one box: predict_torch takes many), mask_input [1, 256, 256] (low-res logits, 256 =
        the prompt encoder's mask_input_size).

        Returns masks [M, H, W], iou predictions [M], low-res logits [M, 256, 256] as numpy
        (from a CUDA device, in page-locked host memory that returns to torch's pinned-memory
        cache when the arrays are freed).
        """
        self._check_image_set()
        coords = labels = boxes = masks = None
        if point_coords is not None or point_labels is not None:
            check_points(point_coords, point_labels)
            coords_np = self.transform.apply_coords(point_coords, self.original_size)
            coords = torch.as_tensor(coords_np, dtype=torch.float, device=self.device)[None]
            labels = torch.as_tensor(point_labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            box_np = self.transform.apply_boxes(check_box(box), self.original_size)
            boxes = torch.as_tensor(box_np, dtype=torch.float, device=self.device)
        if mask_input is not None:
            check_mask_input(np.shape(mask_input), self._mask_input_size(1)[1:], "predict")
            masks = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)[None]
        # numpy prompts were checked on the host: no device-side value check (no sync)
        out = self._predict(coords, labels, boxes, masks, multimask_output, return_logits)
        return to_numpy([t[0] for t in out])

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prompts in the resized frame (see ResizeLongestSide): point_coords [B, P, 2],
        point_labels [B, P] (1, 0 or -1), boxes [B, 4], mask_input [B, 1, 256, 256].

        Returns masks [B, M, H, W] (bool unless return_logits), iou [B, M], low-res [B, M, h, w].
        Non-finite coordinates and other labels raise ValueError (one host-device sync).
        """
        self._check_image_set()
        check_prompt_batch(point_coords, point_labels, boxes, mask_input)
        if mask_input is not None:
            size = self._mask_input_size(mask_input.shape[0])
            check_mask_input(tuple(mask_input.shape), size, "predict_torch")
        check_prompt_values(point_coords, point_labels, boxes)
        return self._predict(
            point_coords, point_labels, boxes, mask_input, multimask_output, return_logits
        )

    @torch.no_grad()
    def _predict(self, point_coords, point_labels, boxes, mask_input, multimask_output, logits):
        """predict_torch without its checks. Point-only prompts go through ``self.decoder``
        (compiled per prompt-count bucket after :meth:`optimize`)."""
        if point_coords is not None and boxes is None and mask_input is None:
            low_res, iou = self.decoder(
                self.features, None, point_coords, point_labels, multimask_output
            )
        else:
            low_res, iou = self.model.decode(
                self.features,
                None,
                point_coords,
                point_labels,
                boxes,
                mask_input,
                multimask_output,
            )
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def optimize(
        self,
        dtype: torch.dtype = torch.bfloat16,
        encoder_mode: str | None = "default",
        decoder_mode: str | None = "default",
        prompt_counts: tuple[int, ...] = tuple(b for b in PROMPT_BUCKETS if b <= 64),
        capture_encoder: bool = True,
        capture_decoder: bool = True,
        tune_encoder_kernels: bool = True,
    ) -> SamPredictor:
        """Make the predictor fast: cast to ``dtype``, compile each encoder Block
        (``encoder_mode``; None: eager) and the prompt decoder (``decoder_mode``, one graph per
        prompt-count bucket), then warm both up on a blank image and on one point per prompt
        for ``prompt_counts`` prompts (the automatic mask generator decodes up to 1024 at
        once: pass ``(1024,)`` for it), so the first real call does not compile.

        On CUDA, ``capture_encoder`` replays the batch-1 encoder (``set_image``) from one CUDA
        graph and ``capture_decoder`` the decoder from one graph per bucket, as their launches
        would otherwise outlast their kernels (each replaces the compile mode
        "reduce-overhead", which cannot be combined with it). After moving the weights
        (``cast_predictor``, ``.to()``) call optimize() again. ``tune_encoder_kernels=False``
        compiles the encoder without coordinate-descent tuning (``compile_image_encoder``):
        a shorter first call, slower norm and elementwise kernels. Returns self."""
        from torchao._models.sam.build_sam import cast_sam
        from torchao._models.sam.modeling.image_encoder import compile_image_encoder

        cuda = self.device.type == "cuda"
        for capture, mode, name in (
            (capture_encoder, encoder_mode, "encoder"),
            (capture_decoder, decoder_mode, "decoder"),
        ):
            if capture and mode == "reduce-overhead":
                raise ValueError(
                    f"capture_{name} already replays the {name} from CUDA graphs: use "
                    f"{name}_mode='default' with it, or capture_{name}=False"
                )
        self.decoder = BatchedDecoder(self.model, decoder_mode, capture_decoder and cuda)
        cast_sam(self.model, dtype)
        if encoder_mode is not None:
            compile_image_encoder(
                self.model.image_encoder, "block", encoder_mode, tune_encoder_kernels
            )
        side = self.transform.target_length  # every image is padded to this square
        blank = torch.zeros(1, 3, side, side, dtype=torch.uint8, device=self.device)
        self.captured_encoder = None
        for _ in range(2):  # the encoder's second call runs compiled code as later ones will
            self.set_torch_image(blank, (side, side))
        if capture_encoder and cuda:
            example = self.model.preprocess(blank)
            self.captured_encoder = CapturedCall(self.model.image_encoder, example)
        self.decoder.warm_up(self.features, set(prompt_counts), one_image=True)
        self.reset_image()
        return self

    def release_graphs(self) -> None:
        """Drop the captured encoder graph and the decoder's graphs (they read the weights where
        they were; after a cast, ``optimize()`` captures the encoder again and the decoder
        captures on its next calls)."""
        self.captured_encoder = None
        self.decoder.clear_graphs()

    def get_image_embedding(self) -> torch.Tensor:
        """The encoder output for the current image: [1, C, He, We]."""
        self._check_image_set()
        return self.features

    def _mask_input_size(self, batch: int) -> tuple[int, ...]:
        """The mask_input shape the prompt encoder takes: [batch, 1, 4 * He, 4 * We]."""
        return (batch, 1, *self.model.prompt_encoder.mask_input_size)

    def _check_image_set(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")


def to_numpy(tensors: list[torch.Tensor]) -> tuple[np.ndarray, ...]:
    """Tensors -> numpy arrays (floating point as fp32). From a CUDA device, every copy goes
    into page-locked memory without waiting, then one wait covers them all (a pageable copy
    of a megapixel mask stages through a bounce buffer and waits on its own)."""
    tensors = [t.detach() for t in tensors]
    tensors = [t.float() if t.is_floating_point() else t for t in tensors]
    if not tensors or tensors[0].device.type != "cuda":
        return tuple(t.cpu().numpy() for t in tensors)
    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for h, t in zip(host, tensors):
        h.copy_(t, non_blocking=True)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return tuple(h.numpy() for h in host)


def check_numpy_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must have shape [H, W, 3], got {image.shape}")
    if image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"image must be uint8 (0..255) or floating point (0..1), got dtype {image.dtype}"
        )


def check_torch_image(image: torch.Tensor, img_size: int) -> None:
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"set_torch_image takes [1, 3, H, W], got {tuple(image.shape)}")
    if max(image.shape[2:]) != img_size:
        raise ValueError(
            f"the longest side of the transformed image must be {img_size}, got "
            f"{tuple(image.shape[2:])}; resize it with ResizeLongestSide first"
        )
    if image.dtype == torch.bool or image.is_complex():
        raise ValueError(f"image must be real-valued 0..255, got dtype {image.dtype}")
    lo, hi = image.min().item(), image.max().item()
    if lo < 0 or hi > 255:
        raise ValueError(f"image values must be in 0..255, got range [{lo}, {hi}]")


def check_points(point_coords, point_labels) -> None:
    if point_coords is None or point_labels is None:
        raise ValueError("point_coords and point_labels must be given together")
    coords, labels = np.asarray(point_coords), np.asarray(point_labels)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise ValueError(f"point_coords must be [P, 2], got {coords.shape}")
    if labels.shape != (coords.shape[0],):
        raise ValueError(f"point_labels must be [{coords.shape[0]}], got {labels.shape}")
    if not np.isfinite(coords).all():
        raise ValueError(f"point_coords must be finite, got {coords.tolist()}")
    bad = ~np.isin(labels, POINT_LABELS)
    if bad.any():
        raise ValueError(_labels_message(np.unique(labels[bad]).tolist()))


def _labels_message(bad: list) -> str:
    return (
        f"point_labels must be 1 (foreground), 0 (background) or -1 (ignored padding), got "
        f"{bad}; give box corners as a box (box= / boxes=), not as labels 2 and 3"
    )


def check_box(box) -> np.ndarray:
    """One box of 4 finite numbers (x0, y0, x1, y1), as an array [1, 4]."""
    arr = np.asarray(box)
    if arr.size != 4:
        raise ValueError(
            f"predict takes one box of 4 numbers (x0, y0, x1, y1), got shape {arr.shape}; for "
            f"many boxes (masks for each) use predict_torch(None, None, "
            f"boxes=predictor.transform.apply_boxes_torch(boxes, predictor.original_size))"
        )
    if not np.isfinite(arr.astype(float)).all():
        raise ValueError(f"box must be finite, got {arr.tolist()}")
    return arr.reshape(1, 4)


def check_mask_input(shape: tuple[int, ...], expected: tuple[int, ...], where: str) -> None:
    """mask_input must have the prompt encoder's shape (low-res logits of an earlier call)."""
    if tuple(shape) != tuple(expected):
        raise ValueError(
            f"{where}: mask_input must be {list(expected)} (low-res logits, as an earlier "
            f"prediction returns them), got {list(shape)}"
        )


def check_prompt_values(point_coords, point_labels, boxes) -> None:
    """Finite coordinates and labels in POINT_LABELS for predict_torch's tensors (one sync)."""
    checks: list[tuple[str, torch.Tensor]] = []
    if point_coords is not None:
        checks.append(("point_coords", ~torch.isfinite(point_coords).all()))
        ok = (point_labels == -1) | (point_labels == 0) | (point_labels == 1)
        checks.append(("point_labels", ~ok.all()))
    if boxes is not None:
        checks.append(("boxes", ~torch.isfinite(boxes).all()))
    if not checks:
        return
    flags = torch.stack([flag for _, flag in checks]).tolist()
    for (name, _), failed in zip(checks, flags):
        if failed and name == "point_labels":
            raise ValueError(_labels_message(torch.unique(point_labels[~ok]).tolist()))
        if failed:
            raise ValueError(f"{name} must be finite: it holds NaN or infinite values")


def check_prompt_batch(point_coords, point_labels, boxes, mask_input) -> None:
    """Prompts must agree on the batch size B."""
    if (point_coords is None) != (point_labels is None):
        raise ValueError("point_coords and point_labels must be given together")
    sizes = {}
    if point_coords is not None:
        if point_coords.dim() != 3 or point_coords.shape[-1] != 2:
            raise ValueError(f"point_coords must be [B, P, 2], got {tuple(point_coords.shape)}")
        if tuple(point_labels.shape) != tuple(point_coords.shape[:2]):
            raise ValueError(
                f"point_labels must be [B, P] = {tuple(point_coords.shape[:2])}, "
                f"got {tuple(point_labels.shape)}"
            )
        sizes["point_coords"] = point_coords.shape[0]
    if boxes is not None:
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be [B, 4], got {tuple(boxes.shape)}")
        sizes["boxes"] = boxes.shape[0]
    if mask_input is not None:
        if mask_input.dim() != 4 or mask_input.shape[1] != 1:
            raise ValueError(f"mask_input must be [B, 1, h, w], got {tuple(mask_input.shape)}")
        sizes["mask_input"] = mask_input.shape[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"prompt batch sizes disagree: {sizes}")
