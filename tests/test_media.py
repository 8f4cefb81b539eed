"""Tests of echo_core.model.media: hand-checkable expectations and transformers' reference processors."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from echo_core.errors import InvalidMediaError
from echo_core.model.media import (
    AUDIO_RATE,
    CLIP_MEAN,
    CLIP_STD,
    HOP_LENGTH,
    MEL_BINS,
    VIDEO_FPS,
    grid_size,
    log_mel,
    patchify_video,
    resize_frames,
    to_mono_16k,
)

pytestmark = pytest.mark.unit


def _frames(t: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


def _tone(freq: float, rate: int, seconds: float) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def _normalise(frames: np.ndarray) -> np.ndarray:
    return (frames.astype(np.float64) / 255.0 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)


# ---------------------------------------------------------------- grid_size / resize


def test_grid_size_keeps_aligned_frame() -> None:
    assert grid_size(112, 112) == (112, 112)


def test_grid_size_rounds_odd_frame_to_multiples_of_28() -> None:
    h, w = grid_size(113, 97)
    assert (h, w) == (112, 84)  # 113/28 = 4.04 -> 4; 97/28 = 3.46 -> 3


def test_grid_size_scales_huge_frame_under_max_pixels() -> None:
    h, w = grid_size(1080, 1920)
    assert h % 28 == 0 and w % 28 == 0
    assert h * w <= 448 * 448
    assert abs(w / h - 1920 / 1080) < 0.15  # aspect kept up to one 28-px step
    # beta = sqrt(1080*1920 / 448^2): h = 448*sqrt(1080/1920) = 336 = 12*28; w = 597.3 -> 21*28 = 588
    assert (h, w) == (336, 588)


def test_grid_size_raises_tiny_frame_to_min_pixels() -> None:
    assert grid_size(28, 28) == (56, 56)  # 28*28 < 56*56, beta = 2


def test_grid_size_rejects_extreme_aspect() -> None:
    with pytest.raises(InvalidMediaError, match="201"):
        grid_size(28, 28 * 201)


def test_resize_frames_is_copy_free_when_size_matches() -> None:
    frames = _frames(2, 56, 84)
    assert resize_frames(frames, (56, 84)) is frames


def test_resize_frames_shape_dtype_and_constant_image() -> None:
    frames = np.full((3, 113, 97, 3), 77, dtype=np.uint8)
    out = resize_frames(frames, (112, 84))
    assert out.shape == (3, 112, 84, 3) and out.dtype == np.uint8
    assert (out == 77).all()  # bicubic weights sum to 1: a flat image stays flat


def test_resize_frames_accepts_read_only_and_negative_stride_views() -> None:
    frames = _frames(1, 60, 60)
    view = frames[..., ::-1]
    view.flags.writeable = False
    out = resize_frames(view, (56, 56))
    assert out.shape == (1, 56, 56, 3)


# ---------------------------------------------------------------- patchify_video


def test_patchify_layout_by_index_arithmetic() -> None:
    """Every value sits where Qwen2-VL's layout says, computed independently of reshape/permute.

    token = ((t * (gh/m) + bh) * (gw/m) + bw) * m*m + mh * m + mw
    feature = ((c * tp + k) * ps + py) * ps + px
    value = norm(frame[t*tp + k, (bh*m + mh)*ps + py, (bw*m + mw)*ps + px, c])
    """
    frames = _frames(4, 56, 84, seed=1)
    vp = patchify_video(frames)
    ps, tp, m = 14, 2, 2
    gt, gh, gw = vp.grid_thw
    assert (gt, gh, gw) == (2, 4, 6)
    assert vp.pixel_values.shape == (gt * gh * gw, 3 * tp * ps * ps)
    assert vp.pixel_values.dtype == torch.float32
    got = vp.pixel_values.numpy()
    norm = _normalise(frames)
    token = 0
    for t in range(gt):
        for bh in range(gh // m):
            for bw in range(gw // m):
                for mh in range(m):
                    for mw in range(m):
                        y0, x0 = (bh * m + mh) * ps, (bw * m + mw) * ps
                        block = norm[t * tp : t * tp + tp, y0 : y0 + ps, x0 : x0 + ps, :]  # k, py, px, c
                        expected = block.transpose(3, 0, 1, 2).reshape(-1)  # c, k, py, px
                        np.testing.assert_allclose(got[token], expected, atol=1e-5)
                        token += 1
    assert token == gt * gh * gw


def test_patchify_normalisation_hand_value() -> None:
    frames = np.zeros((2, 28, 28, 3), dtype=np.uint8)
    frames[..., 0] = 255
    vp = patchify_video(frames, min_pixels=28 * 28)
    assert vp.frame_size == (28, 28)
    red = vp.pixel_values[0, : 2 * 14 * 14]
    blue = vp.pixel_values[0, 2 * 2 * 14 * 14 :]
    assert torch.allclose(red, torch.tensor((1 - 0.48145466) / 0.26862954))
    assert torch.allclose(blue, torch.tensor(-0.40821073 / 0.27577711))


def test_patchify_odd_frames_resized_and_t_padded() -> None:
    frames = _frames(3, 113, 97, seed=2)
    vp = patchify_video(frames)
    assert vp.frame_size == (112, 84)
    assert vp.grid_thw == (2, 8, 6)
    assert vp.n_tokens == 2 * 8 * 6 // 4
    assert vp.pixel_values.shape == (2 * 8 * 6, 1176)
    # The padded 4th frame repeats the 3rd: both halves of the last temporal patch are equal.
    last = vp.pixel_values[8 * 6 :].reshape(-1, 3, 2, 14, 14)
    assert torch.equal(last[:, :, 0], last[:, :, 1])
    np.testing.assert_allclose(vp.patch_times_s, [0.0, 1.0])


def test_patch_times_default_and_explicit() -> None:
    frames = _frames(4, 56, 56)
    vp = patchify_video(frames)
    assert vp.patch_times_s.dtype == np.float64
    np.testing.assert_array_equal(vp.patch_times_s, np.arange(4)[::2] / VIDEO_FPS)
    np.testing.assert_array_equal(vp.patch_times_s, [0.0, 1.0])
    vp = patchify_video(frames, np.array([10.0, 10.5, 11.0, 11.5]))
    np.testing.assert_array_equal(vp.patch_times_s, [10.0, 11.0])


def test_patchify_matches_transformers_image_processor() -> None:
    """One image through Qwen2VLImageProcessorPil == one frame padded to one temporal patch.

    transformers >= 5 patchifies each image on its own, repeating it over the temporal patch,
    so a single image (not a list of two frames) is what lines up with one temporal patch.
    """
    pytest.importorskip("PIL", reason="Qwen2VLImageProcessorPil needs Pillow, which is not installed")
    transformers = pytest.importorskip("transformers")
    processor_cls = getattr(transformers, "Qwen2VLImageProcessorPil", None)
    if processor_cls is None:  # transformers 4.x: the slow numpy processor carries the plain name
        processor_cls = transformers.Qwen2VLImageProcessor
    processor = processor_cls(do_resize=False)
    frame = _frames(1, 56, 84, seed=3)
    ref = processor(images=[frame[0]], return_tensors="np")
    vp = patchify_video(frame)
    assert tuple(int(v) for v in ref["image_grid_thw"][0]) == vp.grid_thw
    np.testing.assert_allclose(np.asarray(ref["pixel_values"]), vp.pixel_values.numpy(), atol=1e-5)


def _transformers_function(module_file: str, name: str, class_name: str | None = None) -> Callable[..., Any]:
    """Load one pure numpy/torch function from transformers' Qwen2-VL source without importing its module.

    The modules themselves import PIL / torchvision at the top, which this environment lacks; the
    layout and smart_resize code inside them needs neither.
    """
    transformers = pytest.importorskip("transformers")
    path = Path(transformers.__file__).parent / "models" / "qwen2_vl" / module_file
    if not path.exists():
        pytest.skip(f"{path} not found in this transformers version")
    tree = ast.parse(path.read_text())
    scope = tree.body
    if class_name is not None:
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
        scope = classes[0].body if classes else []
    found = [n for n in scope if isinstance(n, ast.FunctionDef) and n.name == name]
    if not found:
        pytest.skip(f"{class_name}.{name} not found in {path}")
    found[0].decorator_list = []
    namespace: dict[str, Any] = {"np": np, "torch": torch, "math": math}
    exec(ast.unparse(found[0]), namespace)
    return namespace[name]


def test_patchify_matches_transformers_patchify_source() -> None:
    """Same normalised frames through Qwen2VLVideoProcessor.patchify / Qwen2VLImageProcessorPil.patchify."""
    video_patchify = _transformers_function(
        "video_processing_qwen2_vl.py", "patchify", "Qwen2VLVideoProcessor"
    )
    image_patchify = _transformers_function(
        "image_processing_pil_qwen2_vl.py", "patchify", "Qwen2VLImageProcessorPil"
    )
    sizes = {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}
    for t in (1, 2, 3, 5):
        frames = _frames(t, 84, 112, seed=t)
        norm = torch.from_numpy(_normalise(frames)).permute(0, 3, 1, 2).to(torch.float32)
        ref, gt, gh, gw = video_patchify(None, norm[None], **sizes)
        vp = patchify_video(frames)
        assert (gt, gh, gw) == vp.grid_thw
        torch.testing.assert_close(vp.pixel_values, ref[0], atol=1e-5, rtol=0)
        if t == 1:
            ref_img, _, _ = image_patchify(None, norm[0].numpy(), **sizes)
            np.testing.assert_allclose(vp.pixel_values.numpy(), ref_img, atol=1e-5)


def test_grid_size_matches_transformers_smart_resize() -> None:
    smart_resize = _transformers_function("video_processing_qwen2_vl.py", "smart_resize")
    for h in range(28, 2000, 37):
        for w in range(28, 2000, 41):
            assert grid_size(h, w) == smart_resize(h, w, 28, 56 * 56, 448 * 448), (h, w)


# ---------------------------------------------------------------- audio


def test_to_mono_16k_48k_stereo_int16() -> None:
    left = _tone(1000.0, 48000, 1.0)
    right = 0.5 * left
    pcm = (np.stack([left, right], axis=1) * 0.5 * 32767).astype(np.int16)
    wave = to_mono_16k(pcm, 48000)
    assert wave.shape == (16000,) and wave.dtype == np.float32
    # mono = channel mean: amplitude 0.5 * (1 + 0.5) / 2 = 0.375 (scaled by 32767/32768)
    assert abs(np.abs(wave[100:-100]).max() - 0.375) < 5e-3
    spectrum = np.abs(np.fft.rfft(wave))
    assert int(np.argmax(spectrum)) == 1000  # 1 s at 16 kHz: bin k is k Hz


def test_to_mono_16k_44k1() -> None:
    wave = to_mono_16k(_tone(1000.0, 44100, 1.0).astype(np.float32), 44100)
    assert wave.shape == (16000,) and wave.dtype == np.float32
    assert int(np.argmax(np.abs(np.fft.rfft(wave)))) == 1000


def test_to_mono_16k_passthrough() -> None:
    x = np.random.default_rng(5).uniform(-1, 1, 1600).astype(np.float32)
    np.testing.assert_array_equal(to_mono_16k(x, AUDIO_RATE), x)
    np.testing.assert_array_equal(to_mono_16k(x.astype(np.float64), AUDIO_RATE), x)


def test_to_mono_16k_integer_scaling() -> None:
    np.testing.assert_allclose(to_mono_16k(np.array([-32768, 0, 16384], np.int16), AUDIO_RATE), [-1, 0, 0.5])
    np.testing.assert_allclose(to_mono_16k(np.array([0, 128, 192], np.uint8), AUDIO_RATE), [-1, 0, 0.5])
    np.testing.assert_allclose(to_mono_16k(np.array([-(2**31), 2**30], np.int32), AUDIO_RATE), [-1, 0.5])


def test_log_mel_shape_and_range() -> None:
    wave = (0.5 * _tone(440.0, AUDIO_RATE, 1.0)).astype(np.float32)
    mel = log_mel(wave)
    assert mel.shape == (MEL_BINS, 16000 // HOP_LENGTH) and mel.dtype == torch.float32
    # after the max - 8 floor and (x + 4) / 4, the dynamic range is exactly 2
    assert abs(float(mel.max() - mel.min()) - 2.0) < 1e-5
    assert log_mel(np.zeros(401, np.float32)).shape == (MEL_BINS, 2)


def test_log_mel_matches_whisper_feature_extractor() -> None:
    transformers = pytest.importorskip("transformers")
    rng = np.random.default_rng(6)
    noise = 0.01 * rng.standard_normal(2 * AUDIO_RATE)
    wave = (0.5 * _tone(440.0, AUDIO_RATE, 2.0) + noise).astype(np.float32)
    extractor = transformers.WhisperFeatureExtractor(feature_size=MEL_BINS)
    # padding=False: no padding to 30 s, so the last frames see the same reflect padding as ours.
    ref = extractor(wave, sampling_rate=AUDIO_RATE, return_tensors="np", padding=False)["input_features"][0]
    n_frames = wave.shape[0] // HOP_LENGTH
    assert ref.shape == (MEL_BINS, n_frames)
    np.testing.assert_allclose(log_mel(wave).numpy(), ref[:, :n_frames], atol=1e-4)


def test_mel_filters_match_transformers() -> None:
    audio_utils = pytest.importorskip("transformers.audio_utils")
    from echo_core.model.media import _mel_filters

    ref = audio_utils.mel_filter_bank(
        num_frequency_bins=201,
        num_mel_filters=MEL_BINS,
        min_frequency=0.0,
        max_frequency=8000.0,
        sampling_rate=AUDIO_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    np.testing.assert_allclose(_mel_filters(), ref.T, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    ("frames", "times", "needle"),
    [
        (np.zeros((56, 56), np.uint8), None, r"\(56, 56\)"),
        (np.zeros((2, 56, 56, 4), np.uint8), None, "4 channels"),
        (np.zeros((2, 56, 56, 3), np.float32), None, "float32"),
        (np.zeros((2, 10, 10, 3), np.uint8), None, r"\(2, 10, 10, 3\).*>= 28"),
        (np.zeros((0, 56, 56, 3), np.uint8), None, "T >= 1"),
        (np.zeros((3, 56, 56, 3), np.uint8), np.array([0.0, 0.5]), r"\(2,\).*\(3,\)"),
        (np.zeros((3, 56, 56, 3), np.uint8), np.array([0.0, 1.0, 0.5]), r"index 2: 1\.0 -> 0\.5"),
    ],
    ids=["2d", "4-channels", "float", "10x10", "empty", "times-length", "times-decreasing"],
)
def test_patchify_rejects(frames: np.ndarray, times: np.ndarray | None, needle: str) -> None:
    with pytest.raises(InvalidMediaError, match=needle):
        patchify_video(frames, times)


def test_to_mono_16k_rejects() -> None:
    with pytest.raises(InvalidMediaError, match="sample_rate is 0"):
        to_mono_16k(np.zeros(100, np.float32), 0)
    with pytest.raises(InvalidMediaError, match=r"\(10, 2, 2\).*ndim 3"):
        to_mono_16k(np.zeros((10, 2, 2), np.float32), AUDIO_RATE)
    with pytest.raises(InvalidMediaError, match="0 channels"):
        to_mono_16k(np.zeros((10, 0), np.float32), AUDIO_RATE)
    bad = np.zeros(100, np.float32)
    bad[[3, 50, 70]] = [np.nan, np.inf, np.nan]
    with pytest.raises(InvalidMediaError, match="3 non-finite samples out of 100"):
        to_mono_16k(bad, AUDIO_RATE)


def test_log_mel_rejects() -> None:
    with pytest.raises(InvalidMediaError, match="399 samples; need >= 400"):
        log_mel(np.zeros(399, np.float32))
    with pytest.raises(InvalidMediaError, match=r"\(400, 2\)"):
        log_mel(np.zeros((400, 2), np.float32))
    with pytest.raises(InvalidMediaError, match="int16"):
        log_mel(np.zeros(800, np.int16))
    bad = np.zeros(800, np.float32)
    bad[0] = np.nan
    with pytest.raises(InvalidMediaError, match="1 non-finite"):
        log_mel(bad)
