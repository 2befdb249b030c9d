"""Benchmark: batched population render vs the per-image loop a user would write.

    python bench/diffusion.py            # CPU, the in-code "tiny" model, population 16
    python bench/diffusion.py --gpu      # CUDA, SD-Turbo-shaped random weights, 512 px, bf16

Both paths render the same 16 genomes; the reference is the loop
``pipe(prompt, generator=torch.Generator().manual_seed(seed))`` over the population, measured
in the same run. The script prints the maximum pixel difference between the two (the images
must be the same) and the speed ratio. ``--gpu`` also counts the batched render's FLOPs with
``torch.utils.flop_counter.FlopCounterMode`` and reports model FLOPs utilisation against the
GPU's dense bf16 peak (``--peak-flops``, default 989e12 for an H100 SXM).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.args import at_least  # noqa: E402
from imagery.diffusion import DiffusionGenerator  # noqa: E402
from imagery.diffusion_genome import format_prompt  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fns, device: torch.device, repeats: int) -> list[tuple[float, torch.Tensor]]:
    """Median wall time and last output of each function, run interleaved.

    Interleaving makes both sides see the same machine load when other work shares the CPU.
    """
    times: list[list[float]] = [[] for _ in fns]
    outs: list[torch.Tensor | None] = [None for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            _sync(device)
            start = time.perf_counter()
            outs[i] = fn()
            _sync(device)
            times[i].append(time.perf_counter() - start)
    return [(statistics.median(t), out) for t, out in zip(times, outs, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="SD-Turbo shapes, 512 px, bf16, CUDA")
    parser.add_argument("--population", type=at_least(1), default=16)
    parser.add_argument("--repeats", type=at_least(1), default=5)
    parser.add_argument("--model", default=None, help="override the model (default per mode)")
    parser.add_argument("--device", default=None, help="override the device")
    parser.add_argument("--dtype", default=None, help="override the dtype")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--peak-flops", type=float, default=989e12, help="dense bf16 FLOP/s")
    args = parser.parse_args()

    if args.gpu:
        config = {"model": "random-sd-turbo", "resolution": 512, "steps": 1, "guidance": 0.0}
        config.update(device="cuda", dtype="bfloat16", chunk_size=args.population)
    else:
        config = {"model": "tiny", "steps": 4, "guidance": 7.5, "device": "cpu"}
        config["chunk_size"] = 8
    config.update(prompt="a lighthouse on a cliff", compile=args.compile)
    for key in ("model", "device", "dtype"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)

    generator = DiffusionGenerator.from_config(config)
    genomes = generator.random(np.random.default_rng(2024), args.population)
    started = time.perf_counter()
    generator.load()
    pipe = generator.pipeline
    device = pipe.unet.device
    print(
        f"model {config['model']} on {device} ({pipe.unet.dtype}), loaded in "
        f"{time.perf_counter() - started:.1f} s; population {args.population}, "
        f"chunk {config['chunk_size']}, steps {config['steps']}, guidance {config['guidance']}"
    )

    side = generator.resolution

    def batched() -> torch.Tensor:
        return generator.render_tensor(genomes, full=True)

    def naive() -> torch.Tensor:
        images = []
        for genome in genomes:
            result = pipe(
                format_prompt(genome["prompt"]),
                num_inference_steps=genome["steps"],
                guidance_scale=genome["guidance"],
                generator=torch.Generator().manual_seed(genome["seed"]),
                height=side,
                width=side,
                output_type="pt",
            )
            images.append(result.images.float().cpu())
        return torch.cat(images)

    batched()  # warm-up: kernels, allocator, prompt-embedding cache, compilation
    naive()
    (t_batched, out_batched), (t_naive, out_naive) = _timed([batched, naive], device, args.repeats)
    diff = (out_batched - out_naive).abs().max().item()
    n = args.population
    print(f"naive loop : {t_naive:8.3f} s  ({n / t_naive:7.2f} images/s)")
    print(f"batched    : {t_batched:8.3f} s  ({n / t_batched:7.2f} images/s)")
    print(f"speed-up   : {t_naive / t_batched:8.2f}x   max abs pixel diff {diff:.2e}")

    if args.gpu:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            batched()
        flops = counter.get_total_flops()
        achieved = flops / t_batched
        print(
            f"model FLOPs: {flops / 1e12:.2f} TFLOP per population, "
            f"{achieved / 1e12:.1f} TFLOP/s, MFU {100 * achieved / args.peak_flops:.1f}% "
            f"of {args.peak_flops / 1e12:.0f} TFLOP/s peak"
        )
    # fp32 on the CPU must match to float noise; bf16 kernels differ a little by batch shape.
    limit = 1e-4 if pipe.unet.dtype == torch.float32 else 5e-2
    if not diff <= limit:  # also catches NaN
        print(f"FAIL: batched and per-image images differ by {diff:.2e} (> {limit:g})")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
