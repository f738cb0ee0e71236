#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/fuzz_idx.cpp: small valid IDX files
(a big-endian header, then the payload), one of them gzipped.
Run once from anywhere: python3 tests/fuzz/make_idx_corpus.py"""
import gzip
import math
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "idx")

# type code -> struct format of one big-endian element
TYPES = {0x08: "B", 0x09: "b", 0x0B: "h", 0x0C: "i", 0x0D: "f", 0x0E: "d"}


def idx(type_code, dims, values):
    assert len(values) == math.prod(dims)
    header = struct.pack(">BBBB", 0, 0, type_code, len(dims)) + struct.pack(">%dI" % len(dims), *dims)
    return header + struct.pack(">%d%s" % (len(values), TYPES[type_code]), *values)


def main():
    os.makedirs(OUT, exist_ok=True)
    images = idx(0x08, [2, 3, 3], [(i * 37) % 256 for i in range(18)])
    files = {
        "u8_2x3x3.idx": images,
        "u8_labels_10.idx": idx(0x08, [10], list(range(10))),
        "i8_4.idx": idx(0x09, [4], [-128, -1, 0, 127]),
        "i16_2x3.idx": idx(0x0B, [2, 3], [-32768, -1, 0, 1, 255, 32767]),
        "i32_3.idx": idx(0x0C, [3], [-(2**31), 0, 2**31 - 1]),
        "f32_2x2.idx": idx(0x0D, [2, 2], [0.0, -1.5, 3.25, 1e30]),
        "f64_3.idx": idx(0x0E, [3], [0.5, -2.0, 1e300]),
        "u8_empty_0x5.idx": idx(0x08, [0, 5], []),
        # mtime=0 keeps the file the same on every run
        "u8_2x3x3.idx.gz": gzip.compress(images, mtime=0),
        # two gzip members, split inside the header: the reader joins them
        "u8_2x3x3_two_members.idx.gz": gzip.compress(images[:6], mtime=0) + gzip.compress(images[6:], mtime=0),
    }
    for name, data in files.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print("%s: %d bytes" % (name, len(data)))


if __name__ == "__main__":
    main()
