"""--calibration DIR: real JPEG/PNG files written with Pillow, read back as model inputs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from hwopt.calibration.samples import calibration_sets
from hwopt.errors import HwoptError
from hwopt.calibration.images import IMAGENET_MEAN, IMAGENET_STD, Preprocess, load_calibration_folder

from typer.testing import CliRunner

from hwopt.cli import app

H, W = 8, 12


def tiny_model(nhwc: bool = False) -> onnx.ModelProto:
    """1x1 conv -> ReLU -> depthwise 3x3 -> ReLU -> 1x1 conv (an IBN block), NCHW or NHWC input."""
    rng = np.random.default_rng(0)
    nodes, x = [], "x"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]))
        x = "xt"
    weights = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
               for n, s in (("w0", (8, 3, 1, 1)), ("w1", (8, 1, 3, 3)), ("w2", (4, 8, 1, 1)))]
    nodes += [helper.make_node("Conv", [x, "w0"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
              helper.make_node("Conv", ["b", "w1"], ["c"], group=8, pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["d"]), helper.make_node("Conv", ["d", "w2"], ["y"])]
    shape = [1, H, W, 3] if nhwc else [1, 3, H, W]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, H, W])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def rgb16_png(path: Path, rgb: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): signature, IHDR, IDAT, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.mark.parametrize("preset, expected", [
    ("imagenet", lambda a: (a / 255 - IMAGENET_MEAN) / IMAGENET_STD),
    ("0-1", lambda a: a / 255),
    ("0-255", lambda a: a),
    ("imagenet,bgr", lambda a: ((a / 255 - IMAGENET_MEAN) / IMAGENET_STD)[..., ::-1]),
    ("0-255,bgr", lambda a: a[..., ::-1]),
])
def test_presets_against_hand_computation(tmp_path: Path, pixels: np.ndarray, preset: str, expected) -> None:
    save(tmp_path / "a.png", pixels)
    samples, groups = load_calibration_folder(tmp_path, tiny_model(), preset)
    want = expected(pixels.astype(np.float64)).transpose(2, 0, 1)  # the image is the input's size: no resampling
    assert samples["x"].shape == (1, 3, H, W) and samples["x"].dtype == np.float32
    np.testing.assert_allclose(samples["x"][0], want, rtol=0, atol=1e-5)
    assert list(groups) == ["a.png"]


def test_nhwc_model(tmp_path: Path, pixels: np.ndarray) -> None:
    save(tmp_path / "a.png", pixels)
    samples, _ = load_calibration_folder(tmp_path, tiny_model(nhwc=True), "0-1")
    assert samples["x"].shape == (1, H, W, 3)
    np.testing.assert_allclose(samples["x"][0], pixels / 255, rtol=0, atol=1e-6)
    with pytest.raises(HwoptError, match="3 colour channels"):
        load_calibration_folder(tmp_path, tiny_model(nhwc=True), "0-1,nchw")


def test_resize_covers_and_centre_crops(tmp_path: Path) -> None:
    """A wide 40x10 photo of red | green | blue stripes: the 12x8 centre crop is the green middle."""
    stripes = np.zeros((10, 40, 3), np.uint8)
    stripes[:, :15, 0] = stripes[:, 15:25, 1] = stripes[:, 25:, 2] = 255
    save(tmp_path / "wide.jpg", stripes)
    x = load_calibration_folder(tmp_path, tiny_model(), "0-255")[0]["x"][0]
    assert x.shape == (3, H, W)
    assert x[1, :, 4:8].min() > 200 and x[0, :, 4:8].max() < 60 and x[2, :, 4:8].max() < 60


def test_gray_16bit_corrupt_and_nested(tmp_path: Path, pixels: np.ndarray, capsys) -> None:
    folder = tmp_path / "photos"
    save(folder / "colour.png", pixels)
    save(folder / "nested" / "deeper" / "gray.png", np.full((H, W), 100, np.uint8), "L")
    save(folder / "nested" / "gray16.png", np.full((H, W), 40000, np.uint16))  # opens as mode I;16
    rgb16_png(folder / "rgb16.png", np.broadcast_to(np.array([65535, 32768, 257], np.uint16), (H, W, 3)))
    (folder / "garbage.jpg").write_bytes(b"not a jpeg at all" * 10)
    jpeg = folder / "truncated.jpg"
    Image.fromarray(pixels).resize((200, 150)).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[:600])
    (folder / "notes.txt").write_text("not an image, not counted")

    samples, groups = load_calibration_folder(folder, tiny_model(), "0-255")
    err = capsys.readouterr().err
    assert sorted(groups) == ["colour.png", "nested/deeper/gray.png", "nested/gray16.png", "rgb16.png"]
    assert err.count("skipped, not a readable image") == 2 and "garbage.jpg" in err and "truncated.jpg" in err
    assert "2 grayscale image(s) converted to RGB" in err
    assert "Traceback" not in err
    by_file = dict(zip(groups, samples["x"]))
    np.testing.assert_allclose(by_file["nested/deeper/gray.png"], 100.0, atol=1e-4)
    np.testing.assert_allclose(by_file["nested/gray16.png"], 40000 * 255 / 65535, atol=1e-3)  # not clipped at 255
    np.testing.assert_allclose(by_file["rgb16.png"][:, 0, 0], [255, 128, 1], atol=0.5)  # 16 -> 8 bits
    np.testing.assert_allclose(by_file["colour.png"], pixels.transpose(2, 0, 1), atol=1e-4)


def test_split_by_file(tmp_path: Path, pixels: np.ndarray) -> None:
    for i in range(10):
        save(tmp_path / f"d{i % 3}" / f"{i}.png", np.roll(pixels, i, axis=1))
    fit, held = calibration_sets(tiny_model(), tmp_path, count=64, eval_count=8, seed=3, preprocess="0-255")
    assert len(fit["x"]) + len(held["x"]) == 10 and len(held["x"]) == 2  # a quarter, as for an .npz
    # The files are all different: no sample is on both sides.
    rows = {f.tobytes() for f in fit["x"]}
    assert not any(h.tobytes() in rows for h in held["x"])


@pytest.mark.parametrize("content", [None, "readme", "corrupt"])
def test_no_readable_image(tmp_path: Path, content: str | None) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    if content == "readme":
        (folder / "README.txt").write_text("photos go here")
    elif content == "corrupt":
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(HwoptError, match="no JPEG or PNG file|no readable image"):
        load_calibration_folder(folder, tiny_model())


def test_preset_parsing() -> None:
    assert Preprocess.parse(None) == Preprocess("imagenet", False, None)
    assert Preprocess.parse("BGR, 0-1 ,nhwc") == Preprocess("0-1", True, "nhwc")
    for bad, message in (("imagenet,0-1", "one scale"), ("rgb565", "unknown preset 'rgb565'")):
        with pytest.raises(HwoptError, match=message):
            Preprocess.parse(bad)


def hwopt(*args: str):
    """The command line, run in-process (typer's runner: real argument parsing, exit codes and stderr)."""
    return CliRunner().invoke(app, list(args))


def test_cli(tmp_path: Path, pixels: np.ndarray) -> None:
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), model)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.onnx"
    for command in (["apply", str(model), "-o", str(out), "--rule", "fuse-ibn"],
                    ["optimize", str(model), "-o", str(out), "-t", "npu32"]):
        done = hwopt(*command, "--calibration", str(empty))
        assert done.exit_code == 2 and done.stderr.count("\n") == 1, done.stderr
        assert "no JPEG or PNG file" in done.stderr and not out.exists()
    photos = tmp_path / "photos"
    for i in range(6):
        save(photos / f"{i}.jpg", np.roll(pixels, 2 * i, axis=0))
    done = hwopt("apply", str(model), "-o", str(out), "--rule", "fuse-ibn", "--calibration", str(photos),
                 "--preprocess", "imagenet,bgr", "--json")
    assert done.exit_code == 0, done.stderr
    assert out.is_file() and str(photos) in done.stdout
