#!/usr/bin/env python3
"""PyTorch + PEFT LoRA training speed on this CPU: the peer of `cargo bench --bench train`.

The same configuration as the bench: the GGUF model dequantized to fp32 by transformers,
LoRA rank 16 / alpha 32 on q,k,v,o,gate,up,down, AdamW, sequences of random token ids,
`--threads` CPU threads (or `--device cuda`, for a lent GPU machine). Prints one JSON
line: tokens/s (median over the timed steps).

Usage: python3 scripts/bench/peft_train.py --model M.gguf [--seq 256] [--batch 4] [--steps 3] [--threads 2] [--device cpu]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    path = Path(args.model)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, torch_dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules=targets, lora_dropout=0.0))
    model.to(args.device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq)).to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    rates = []
    for step in range(args.steps + 1):
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        sync()
        if step > 0:  # the first step warms up allocators and threads
            rates.append(args.batch * args.seq / (time.perf_counter() - t))
    print(json.dumps({"tokens_per_s": statistics.median(rates), "threads": args.threads, "device": args.device, "loss": loss.item()}))


if __name__ == "__main__":
    main()
