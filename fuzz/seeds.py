#!/usr/bin/env python3
"""Writes the seed corpus of genflow's fuzz targets (fuzz/corpus/<target>/) and the TOML dictionary
(fuzz/config.dict). Small valid files of every format and a few invalid ones, made here by hand
(standard library only), so that the corpus in the repository can be regenerated and reviewed.

    python3 fuzz/seeds.py

Each target's input layout is described at the top of its fuzz_targets/<target>.rs.
"""
import gzip
import json
import pathlib
import re
import struct
import tomllib
import zlib

FUZZ = pathlib.Path(__file__).resolve().parent
PRESETS = FUZZ.parent / "presets"
# genflow::config::PRESETS, in order (the config target's first byte, mod 32, picks one by index).
PRESET_ORDER = re.findall(r'^\s*name: "([^"]+)",$',
                          (FUZZ.parent / "src" / "config.rs").read_text().split("pub const PRESETS")[1]
                          .split("];")[0], re.M)
TEXT_MODE = b"\x1f"  # config target: the rest is a TOML document


def preset_mode(name):
    """The config target's first byte that picks preset `name`."""
    return bytes([PRESET_ORDER.index(name)])


def gz(data):
    return gzip.compress(data, mtime=0)


def be16(n):
    return struct.pack(">H", n)


def idx(dims, data, kind=0x08):
    return bytes([0, 0, kind, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + bytes(data)


def png(width, height, channels, pixels):
    """A PNG of 8-bit grey (channels 1) or RGB (3) pixels, row-major, interleaved."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    colour = {1: 0, 3: 2}[channels]
    row = width * channels
    raw = b"".join(b"\x00" + bytes(pixels[y * row:(y + 1) * row]) for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def grid_png(tiles, w, h, cols, rows):
    """genflow's grid of grey w x h tiles (upscale 1, 2-pixel gaps of grey 128), as RGB."""
    pad, grey = 2, 128
    gw, gh = pad + cols * (w + pad), pad + rows * (h + pad)
    img = [[(grey, grey, grey)] * gw for _ in range(gh)]
    for i, tile in enumerate(tiles):
        x0, y0 = pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)
        for y in range(h):
            for x in range(w):
                v = tile[y * w + x]
                img[y0 + y][x0 + x] = (v, v, v)
    return png(gw, gh, 3, [c for line in img for px in line for c in px])


def safetensors(tensors, metadata=None):
    """tensors: name -> (dtype, shape, raw bytes), in order."""
    header, blobs, offset = {}, [], 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


def preset(name):
    return (PRESETS / f"{name}.toml").read_bytes()


def idx_seeds():
    # Input: 2-byte k, then a file read alone, whose first k bytes are also an image file and the
    # rest its label file.
    images = idx([2, 3, 3], range(18))
    labels = idx([2], [7, 2])
    return {
        "labels-valid": be16(0) + idx([3], [7, 2, 1]),
        "images-labels-valid": be16(len(images)) + images + labels,
        "images-gz-labels": be16(len(gz(images))) + gz(images) + labels,
        "images-labels-gz": be16(len(images)) + images + gz(labels),
        "images-truncated": be16(len(images) - 5) + images[:-5] + labels,
        "label-out-of-range": be16(len(images)) + images + idx([2], [7, 10]),
        "count-mismatch": be16(len(images)) + images + idx([3], [1, 2, 3]),
        "wrong-magic": be16(0) + b"\x12\x34\x08\x01\x00\x00\x00\x01\x05",
        "element-type-float": be16(0) + idx([1], [0, 0, 0, 0], kind=0x0D),
        "absurd-dims": be16(0) + idx([0xFFFFFFFF] * 3, []),
        "zero-images-huge-rows": be16(0) + idx([0, 0xFFFFFFFF, 0xFFFFFFFF], []),
        "gz-truncated": be16(0) + gz(idx([3], [1, 2, 3]))[:-6],
    }


def cifar_seeds():
    # Input: 2-byte k, then a batch file read alone, whose first k bytes are also a first batch file
    # and the rest a second.
    record = bytes([3]) + bytes((i * 7) % 256 for i in range(3072))
    return {
        "one-record": be16(0xFFFF) + record,
        "short": be16(0) + record[:100],
        "label-10": be16(0) + bytes([10]) + bytes(20),
    }


def digits_seeds():
    def line(pixels, label):
        return ",".join(str(p) for p in list(pixels) + [label]) + "\n"
    valid = (line([i % 17 for i in range(64)], 3) + "\n" + line([16] * 64, 9)).encode()
    return {
        "valid": valid,
        "valid-gz": gz(valid),
        "decimals": line(["16.0"] * 64, "1.0").encode(),
        "short-line": line(range(63), 1).encode(),
        "pixel-17": line([17] + [0] * 63, 1).encode(),
        "label-10": line([0] * 64, 10).encode(),
        "not-utf8": b"\xff\xfe" + valid[:40],
    }


def user_vectors_seeds():
    # Input: 1 byte: dimension 1 + byte % 8; then the CSV file.
    return {
        "header-2d": b"\x01x,y\n0.5,-1\n2,3e2\n",
        "no-header-3d": b"\x02 1, 2, 3\n\n4,5,6\n",
        "nan": b"\x01x,y\n0.5,nan\n",
        "wrong-width": b"\x01x,y\n1,2,3\n",
        "header-only": b"\x01x,y\n",
    }


def user_images_seeds():
    # Input: format byte (0 png, 1 idx, 2 idx.gz, 3 safetensors, 4 folder of one png), shape byte
    # (0 [1,2,2], 1 [3,2,2], 2 [1,8,8], 3 [3,8,8], 4 [1,28,28], 5 [3,32,32], 6 [1,1,1], 7 [2,4,4]),
    # then the file.
    grey2 = png(2, 2, 1, [0, 64, 128, 255])
    tiles = [[0, 50, 100, 150], [200, 250, 10, 20], [30, 40, 60, 70]]
    images = idx([2, 2, 2], [0, 1, 2, 3, 252, 253, 254, 255])
    return {
        "png-one-grey": b"\x00\x00" + grey2,
        "png-one-rgb": b"\x00\x03" + png(8, 8, 3, [(i * 5) % 256 for i in range(192)]),
        "png-grid-of-3": b"\x00\x00" + grid_png(tiles, 2, 2, 2, 2),
        "png-wrong-size": b"\x00\x02" + grey2,
        "png-two-channels": b"\x00\x07" + grey2,
        "idx": b"\x01\x00" + images,
        "idx-gz": b"\x02\x00" + gz(images),
        "idx-wrong-shape": b"\x01\x02" + images,
        "safetensors-u8": b"\x03\x00" + safetensors({"images": ("U8", [1, 1, 2, 2], bytes([0, 1, 2, 255]))}),
        "safetensors-f32": b"\x03\x01" + safetensors(
            {"x": ("F32", [1, 3, 2, 2], f32(*[i / 11 for i in range(12)]))}),
        "safetensors-out-of-range": b"\x03\x00" + safetensors({"images": ("F32", [1, 1, 2, 2], f32(0, 1, 2, -1))}),
        "folder": b"\x04\x00" + grey2,
        # Crashes found (tests/fuzz_regressions.rs): no images, as IDX and as safetensors.
        "idx-no-images": b"\x01\x00" + idx([0, 2, 2], []),
        "safetensors-no-images": b"\x03\x00" + safetensors({"images": ("U8", [0, 1, 2, 2], b"")}),
    }


def config_seeds():
    # Input: byte (mod 32) < len(PRESETS): that preset, the rest `--set` overrides one per line; otherwise the
    # rest a TOML document, then after a NUL byte overrides one per line.
    return {
        "toy-set": preset_mode("iresnet-toy") + b"train.steps=5\ndata.density=checkerboard\nmodel.hidden=[8, 8]\noptim.lr=1e-3",
        "digits-set": preset_mode("iresnet-digits") + b"train.epochs=2\nmodel.scales=[2]\neval.inverse.max_iter=10",
        "classifier-bad-batch": preset_mode("iresnet-classifier-mnist") + b"train.batch_size=0",
        "features-set": preset_mode("features-mnist") + b"model.widths=[4]\nmodel.features=8",
        "set-not-a-table": preset_mode("iresnet-toy") + b"seed.x=1",
        "set-no-equals": preset_mode("iresnet-toy") + b"train.steps",
        "toy-text": TEXT_MODE + preset("iresnet-toy"),
        "digits-text-and-set": TEXT_MODE + preset("iresnet-digits") + b"\0seed=3\ntrain.ema_decay=0.5",
        "classifier-text": TEXT_MODE + preset("iresnet-classifier-mnist"),
        "wrong-type": TEXT_MODE + b'[train]\nsteps = "many"\nbatch_size = 8\n',
        "unknown-key": TEXT_MODE + b'task = "toy-density"\n[train]\nsteps = 1\nbatch_size = 1\nstpes = 2\n',
        "unknown-task": TEXT_MODE + b'task = "gan"\n[train]\nsteps = 1\nbatch_size = 1\n',
        "syntax-error": TEXT_MODE + b"[train\nsteps = 1\n",
        "task-not-a-string": TEXT_MODE + b"task = 3\n",
        "gan-set": preset_mode("gan-toy") + b'train.update="single-loss"\nmodel.z_dim=2\ntrain.steps=1',
        "gan-text": TEXT_MODE + preset("gan-toy"),
        "ogan-set": preset_mode("ogan-mnist") + b"train.batch_size=3",
        "glann-set": preset_mode("glann-mnist") + b"model.n_z=0\nloss.levels=9",
        "glann-text": TEXT_MODE + preset("glann-mnist"),
    }


def dict_entry(word):
    """A libFuzzer dictionary entry: in quotes; `\\`, `"` and bytes outside printable ASCII escaped
    (libFuzzer reads only `\\\\`, `\\"` and `\\xAB`)."""
    def esc(b):
        c = chr(b)
        return "\\" + c if c in '\\"' else c if 32 <= b < 127 else f"\\x{b:02X}"
    return '"' + "".join(esc(b) for b in word.encode()) + '"'


def config_dict():
    """libFuzzer dictionary: every key, table name and string value of the presets."""
    words = set()

    def walk(table):
        for key, value in table.items():
            words.update([key, f"{key} = ", f"[{key}]"])
            if isinstance(value, dict):
                walk(value)
            elif isinstance(value, str):
                words.add(f'"{value}"')
    for name in PRESET_ORDER:
        walk(tomllib.loads(preset(name).decode()))
    words.update(["=", "[", "]", "{", "}", ",", "\n", "true", "false", "nan", "inf", "-1", "0",
                  "1e308", "18446744073709551615", "9223372036854775807", "toy-density",
                  "image-density", "classifier", "feature-classifier", "toy-gan", "image-gan", "glann",
                  "cifar10", "fashion-mnist"])
    return "".join(f"{dict_entry(w)}\n" for w in sorted(words))


def checkpoint_seeds():
    toy = preset("iresnet-toy").decode()
    digits_v1 = preset("iresnet-digits").decode().replace("[model]", "[image_model]")
    meta = {"format": "pt", "genflow_step": "10", "genflow_config": toy,
            "genflow_format": "2", "genflow_version": "0.1.0"}
    tensors = {"model.w": ("F32", [2, 2], f32(1, 2, 3, 4)), "optim.step": ("I64", [], struct.pack("<q", 10))}
    valid = safetensors(tensors, meta)
    v1 = safetensors(tensors, {"genflow_step": "3", "genflow_config": digits_v1})
    return {
        "toy-format-2": valid,
        "digits-format-1": v1,
        "truncated": valid[: len(valid) // 2],
        "foreign": safetensors({"weight": ("F32", [1], f32(0.5))}),
        "newer-format": safetensors(tensors, dict(meta, genflow_format="3")),
        "bad-step": safetensors(tensors, dict(meta, genflow_step="-1")),
        "bad-config": safetensors(tensors, dict(meta, genflow_config="[train\n")),
        "f16-tensor": safetensors({"h": ("F16", [2], b"\x00\x3c\x00\x40")}, meta),
        "absurd-header-length": b"\xff" * 8 + b"{}",
        "empty-tensor": safetensors({"e": ("U8", [0, 4000000000], b"")}, meta),
        # Crashes found (tests/fuzz_regressions.rs): dimensions past i64, line breaks in a name and
        # in metadata.
        "dim-past-i64": safetensors({"e": ("U8", [2**63, 0], b"")}, meta),
        "strides-past-i64": safetensors({"e": ("U8", [0, 2**62, 2**62], b"")}, meta),
        "name-with-line-break": safetensors({"a\nb": ("F16", [1], b"\0\0")}, meta),
        "format-with-line-break": safetensors(tensors, dict(meta, genflow_format="2\n3")),
    }


def main():
    corpora = {
        "idx": idx_seeds(), "cifar": cifar_seeds(), "digits": digits_seeds(),
        "user_vectors": user_vectors_seeds(), "user_images": user_images_seeds(),
        "config": config_seeds(), "checkpoint": checkpoint_seeds(),
    }
    total = 0
    for target, seeds in corpora.items():
        folder = FUZZ / "corpus" / target
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
            total += len(data)
    (FUZZ / "config.dict").write_text(config_dict())
    print(f"{sum(map(len, corpora.values()))} seeds, {total} bytes, in {FUZZ / 'corpus'}")


if __name__ == "__main__":
    main()
