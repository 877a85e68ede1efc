"""Flow file formats: files written byte by byte from the format definitions read back to the expected
numbers, round trips through our writers, and the errors for bad files."""

import struct
import zlib

import numpy as np
import pytest

from densekit.io import read_flo, read_flow, read_pfm, write_flo, write_flow, write_pfm
from densekit.io.flow import read_kitti_png, write_kitti_png


def png_bytes(width, height, bit_depth, color_type, rows: list[bytes]) -> bytes:
    """A PNG from its definition: signature, IHDR, one zlib IDAT of filter-0 scanlines, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


# -- .flo -------------------------------------------------------------------------------------------------
def test_flo_written_by_hand(tmp_path):
    # 3 wide, 2 high; u, v interleaved, row-major; one pixel carries the 1e10 "unknown" marker, one a NaN
    values = [1.0, -2.0, 0.5, 0.25, 3.0, 4.0, -1.5, 7.0, 1e10, 0.0, float("nan"), 2.0]
    path = tmp_path / "hand.flo"
    path.write_bytes(struct.pack("<fii", 202021.25, 3, 2) + struct.pack("<12f", *values))
    assert path.read_bytes()[:4] == b"PIEH"  # the magic number's bytes, as the format describes them
    raw = read_flo(path)
    assert raw.shape == (2, 3, 2) and raw.dtype == np.float32
    np.testing.assert_array_equal(raw[0, 1], [0.5, 0.25])
    np.testing.assert_array_equal(raw[1, 0], [-1.5, 7.0])
    flow, valid = read_flow(path)
    np.testing.assert_array_equal(valid, [[True, True, True], [True, False, False]])
    np.testing.assert_array_equal(flow[..., 0], [[1.0, 0.5, 3.0], [-1.5, 0.0, 0.0]])
    np.testing.assert_array_equal(flow[..., 1], [[-2.0, 0.25, 4.0], [7.0, 0.0, 0.0]])


def test_flo_round_trip_with_invalid_pixels(tmp_path):
    rng = np.random.default_rng(0)
    flow = rng.normal(0, 20, (5, 7, 2)).astype(np.float32)
    valid = rng.random((5, 7)) > 0.3
    write_flow(tmp_path / "a.flo", flow, valid)
    back, back_valid = read_flow(tmp_path / "a.flo")
    np.testing.assert_array_equal(back_valid, valid)
    np.testing.assert_array_equal(back[valid], flow[valid])
    assert (back[~valid] == 0).all()
    assert (read_flo(tmp_path / "a.flo")[~valid] == 1e10).all()  # invalid written as the Middlebury marker
    assert (tmp_path / "a.flo").stat().st_size == 12 + 5 * 7 * 2 * 4


@pytest.mark.parametrize(
    "data, match",
    [
        (
            struct.pack("<fii", 202021.25, 4, 3) + b"\0" * (4 * 2 * 4 * 3 - 4),
            r"header promises 4x3 \(WxH\) = 108 bytes, got 104",
        ),
        (struct.pack("<fii", 1.0, 2, 2) + b"\0" * 32, "magic number 1.0"),
        (b"PIE", "12-byte header"),
        (struct.pack("<fii", 202021.25, 0, 2), "empty or negative size"),
    ],
)
def test_flo_bad_files(tmp_path, data, match):
    path = tmp_path / "bad.flo"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=match) as err:
        read_flow(path)
    assert "bad.flo" in str(err.value)


# -- KITTI png --------------------------------------------------------------------------------------------
def test_kitti_png_written_by_hand(tmp_path):
    # the file's channels are R, G, B = u, v, valid (big-endian uint16 in PNG); u, v = (val - 2^15) / 64
    def px(r, g, b):
        return struct.pack(">3H", r, g, b)

    rows = [
        px(32768 + 96, 32768 - 144, 1) + px(32768, 32768 + 64, 1),  # (1.5, -2.25) valid, (0, 1) valid
        px(40000, 20000, 0) + px(32768 - 6400, 32768 + 1, 7),  # invalid, (-100, 1/64) valid (any B > 0)
    ]
    path = tmp_path / "000000_10.png"
    path.write_bytes(png_bytes(2, 2, 16, 2, rows))
    flow, valid = read_flow(path)
    assert flow.shape == (2, 2, 2) and flow.dtype == np.float32
    np.testing.assert_array_equal(valid, [[True, True], [False, True]])
    np.testing.assert_array_equal(flow[0, 0], [1.5, -2.25])
    np.testing.assert_array_equal(flow[0, 1], [0.0, 1.0])
    np.testing.assert_array_equal(flow[1, 0], [0.0, 0.0])  # invalid -> 0
    np.testing.assert_array_equal(flow[1, 1], [-100.0, 1 / 64])


def test_kitti_png_round_trip_quantises_to_a_64th(tmp_path):
    rng = np.random.default_rng(1)
    flow = rng.uniform(-300, 300, (4, 6, 2)).astype(np.float32)
    valid = rng.random((4, 6)) > 0.4
    write_kitti_png(tmp_path / "f.png", flow, valid)
    back, back_valid = read_kitti_png(tmp_path / "f.png")
    np.testing.assert_array_equal(back_valid, valid)
    np.testing.assert_allclose(back[valid], np.round(flow[valid] * 64) / 64, atol=1e-6)
    assert np.abs(back[valid] - flow[valid]).max() <= 0.5 / 64 + 1e-6
    with pytest.raises(ValueError, match=r"does not fit the KITTI PNG range \(\+-512 px\)"):
        write_flow(tmp_path / "big.png", np.full((2, 2, 2), 600.0, np.float32))


@pytest.mark.parametrize(
    "depth, ctype, row, match",
    [
        (8, 2, b"\x80\x80\x01" * 2, "16-bit with 3 channels.*got uint8 with 3"),
        (16, 0, struct.pack(">2H", 1, 2), "16-bit with 3 channels.*got uint16 with 1"),
    ],
)
def test_kitti_png_wrong_kind(tmp_path, depth, ctype, row, match):
    path = tmp_path / "x.png"
    path.write_bytes(png_bytes(2, 1, depth, ctype, [row]))
    with pytest.raises(ValueError, match=match) as err:
        read_flow(path)
    assert "x.png" in str(err.value)


def test_kitti_png_truncated(tmp_path):
    path = tmp_path / "cut.png"
    path.write_bytes(png_bytes(2, 2, 16, 2, [b"\0" * 12, b"\0" * 12])[:30])
    with pytest.raises(ValueError, match="cut.png: unreadable KITTI flow PNG"):
        read_flow(path)


# -- pfm --------------------------------------------------------------------------------------------------
def test_pfm_written_by_hand_little_and_big_endian(tmp_path):
    # 2 wide, 2 high, 3 channels; rows stored bottom to top
    top = [1.0, 2.0, 0.0, 3.0, 4.0, 0.0]
    bottom = [-5.0, 6.5, 0.0, float("inf"), 8.0, 0.0]
    little = tmp_path / "OpticalFlowIntoFuture_0006_L.pfm"
    little.write_bytes(b"PF\n2 2\n-1.0\n" + struct.pack("<12f", *bottom, *top))
    big = tmp_path / "big.pfm"
    big.write_bytes(b"PF\n2 2\n1.0\n" + struct.pack(">12f", *bottom, *top))
    for path in (little, big):
        arr = read_pfm(path)
        assert arr.shape == (2, 2, 3)
        np.testing.assert_array_equal(arr[0, :, :2], [[1.0, 2.0], [3.0, 4.0]])
        flow, valid = read_flow(path)
        np.testing.assert_array_equal(flow[..., 0], [[1.0, 3.0], [-5.0, 0.0]])
        np.testing.assert_array_equal(flow[..., 1], [[2.0, 4.0], [6.5, 0.0]])
        np.testing.assert_array_equal(valid, [[True, True], [True, False]])  # inf -> invalid


def test_pfm_single_channel_and_round_trips(tmp_path):
    gray = tmp_path / "d.pfm"
    gray.write_bytes(b"Pf\n3 1\n-1.0\n" + struct.pack("<3f", 1.0, 2.0, 3.0))
    np.testing.assert_array_equal(read_pfm(gray), [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="needs 3 channels"):
        read_flow(gray)
    arr = np.arange(24, dtype=np.float32).reshape(2, 4, 3)
    for little in (True, False):
        write_pfm(tmp_path / "r.pfm", arr, little_endian=little)
        np.testing.assert_array_equal(read_pfm(tmp_path / "r.pfm"), arr)
    flow = np.arange(16, dtype=np.float32).reshape(2, 4, 2)
    valid = np.array([[True, False, True, True], [True, True, True, False]])
    write_flow(tmp_path / "f.pfm", flow, valid)
    back, back_valid = read_flow(tmp_path / "f.pfm")
    np.testing.assert_array_equal(back_valid, valid)
    np.testing.assert_array_equal(back[valid], flow[valid])


def test_pfm_bad_files(tmp_path):
    path = tmp_path / "t.pfm"
    path.write_bytes(b"PF\n4 4\n-1.0\n" + b"\0" * 100)
    expected = r"t.pfm: truncated PFM: header promises 4x4x3 float32 = 192 bytes, got 100"
    with pytest.raises(ValueError, match=expected):
        read_flow(path)
    path.write_bytes(b"P6\n4 4\n255\n" + b"\0" * 48)
    with pytest.raises(ValueError, match="t.pfm: not a PFM file"):
        read_flow(path)


def test_unknown_extension_and_bad_write(tmp_path):
    expected = r"x.npy: unknown flow file extension '.npy'; expected one of \['.flo', '.png', '.pfm'\]"
    with pytest.raises(ValueError, match=expected):
        read_flow(tmp_path / "x.npy")
    with pytest.raises(ValueError, match=r"must be \(H, W, 2\)"):
        write_flo(tmp_path / "y.flo", np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="cannot read flow file"):
        read_flow(tmp_path / "absent.flo")
