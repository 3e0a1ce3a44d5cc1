#!/usr/bin/env python3
"""A stand-in for a GGUF model where the real file cannot travel (a lent GPU machine
takes 64 MiB of files; SmolLM2 Q4_1 is 98 MB): the same header — metadata, tokenizer,
tensor names, types and shapes — and random tensor data.

Speed does not depend on the weights' values, so benchmarks run on the stand-in measure
what they measure on the real model; losses and generated text are meaningless.

    synth_model.py head MODEL.gguf OUT.head     # header bytes; prints the file's size
    synth_model.py fill OUT.head SIZE OUT.gguf  # header + random data up to SIZE bytes

Every data byte is drawn from 0x00-0x2F and 0x80-0xAF, so whatever the tensor type, each
f16 or f32 field it lands in is finite and small (|x| < 1/8) with a random sign; quantized
nibbles and int8 values stay random. The network then stays finite through training.
"""

import os
import sys

import numpy as np


def head(model: str, out: str) -> None:
    from gguf import GGUFReader  # only here: the machine that fills may not have it

    reader = GGUFReader(model)
    with open(model, "rb") as f:
        header = f.read(reader.data_offset)
    with open(out, "wb") as f:
        f.write(header)
    print(os.path.getsize(model))


def fill(head_path: str, size: int, out: str) -> None:
    header = open(head_path, "rb").read()
    rng = np.random.default_rng(0)
    alphabet = np.concatenate([np.arange(0x00, 0x30), np.arange(0x80, 0xB0)]).astype(np.uint8)
    left = size - len(header)
    with open(out, "wb") as f:
        f.write(header)
        while left > 0:
            n = min(left, 1 << 24)
            f.write(alphabet[rng.integers(0, len(alphabet), n)].tobytes())
            left -= n


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "head":
        head(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "fill":
        fill(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(__doc__)
