"""GPU check: bf16 training of a ViT and a UNet sized for a GPU, under torchrun, with DDP and with FSDP.

    python benchmarks/gpu_check.py                 # on a GPU machine: <= 8 minutes on one H100/H200
    python benchmarks/gpu_check.py --cpu-smoke     # tiny sizes, gloo, 2 processes: proves the script (CI)
    nox -s gpu [-- --cpu-smoke]

Data: a synthesized store at 1 deg (181 x 360) with 64 channels, written by the project's own shard writer (with
checksums) into a temporary folder, read by the project's loader exactly as training does (worker processes, the
shared ring, copies to the GPU on a side stream, normalization there). Each of the four runs (vit/unet x ddp/fsdp)
is its own torchrun, killed if it outlives its time box; every run prints and records:
  step time and samples/s (bf16 autocast, fp32 master weights), MFU (FLOPs of one step counted with
  torch.utils.flop_counter.FlopCounterMode, against the GPU's dense bf16 peak from PEAK_BF16 by device name), peak GPU
  memory, the data-wait share and queue depth (loader.stats()), the loader's own rate with no model, loss parity of
  bf16 against fp32 over the first steps (same weights, same batches), and whether the batches normalized on the
  GPU equal the CPU loader's bit for bit.
A JSON summary goes to $OUT/gpu_check.json when OUT is set (and to --json). Exit status: 0 when every run finished.
A run past its time box is killed with every process it started (found by a mark in their environment: torchrun
starts its workers in sessions of their own). Needs only the project installed (and torch with CUDA for the check).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = os.environ.get("FORGE_PKG") or next(p.parent.name for p in sorted((PROJECT / "src").glob("*/cli.py")))
sys.path.insert(0, str(PROJECT / "src"))  # this checkout's code, installed or not (and whatever else is installed)

# Dense bf16 peak (FLOP/s) by device name, from the vendors' datasheets; the first key found in the name wins.
PEAK_BF16 = {"H200": 989e12, "GH200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "H800": 989e12, "B200": 2250e12,
             "A100": 312e12, "A800": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}
# size -> grid, channels, time steps, per-rank batch, models {name: (width, depth, patch)}, steps, box (s)
SIZES = {
    "gpu": dict(nlat=181, nlon=360, channels=64, times=48, batch=8, parity_steps=4, warmup=4, steps=16, box=150,
                models={"vit": (256, 12, 4), "unet": (256, 3, 4)}, nproc=None, workers=8, prefetch=2),
    "cpu-smoke": dict(nlat=16, nlon=32, channels=6, times=24, batch=2, parity_steps=2, warmup=1, steps=3, box=180,
                      models={"vit": (8, 1, 4), "unet": (8, 1, 4)}, nproc=2, workers=1, prefetch=2),
}
BUDGET_S = 8 * 60 - 30  # the whole check: runs that would start later than this are skipped


def mod(name: str):
    return importlib.import_module(f"{PACKAGE}.{name}")


# ----------------------------------------------------------------------------------------------------------------
# the orchestrating process


def environment() -> dict:
    import numpy as np
    import torch

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
           "cuda": torch.version.cuda, "cpus": os.cpu_count(), "gpus": torch.cuda.device_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        nccl = torch.cuda.nccl.version()
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                   gpu_memory_gib=round(props.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version(),
                   nccl=".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl))
    for name in ("xarray", "zarr", "pydantic"):
        try:
            env[name] = importlib.import_module(name).__version__
        except ImportError:
            env[name] = "missing"
    return env


def synthesize(folder: Path, size: dict) -> tuple[Path, Path]:
    """Shards (the project's writer, checksums included) and stats.json of smooth fields moving east."""
    import numpy as np
    import xarray as xr

    nlat, nlon, nc, nt = size["nlat"], size["nlon"], size["channels"], size["times"]
    lat = np.linspace(-90, 90, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    rng = np.random.default_rng(0)
    k = rng.integers(1, 4, nc)
    waves = np.cos(np.deg2rad(lon)[None, :] * k[:, None, None] + rng.uniform(0, 6.3, (nc, 1, 1)))  # (c, 1, lon)
    field = (np.cos(np.deg2rad(lat))[None, :, None] * waves).astype(np.float32)  # (c, lat, lon)
    data = np.stack([np.roll(field, t, axis=-1) + 0.05 * t for t in range(nt)])  # (t, c, lat, lon)
    data = data * (10 + np.arange(nc, dtype=np.float32))[None, :, None, None]
    times = np.datetime64("2000-01-01", "ns") + np.arange(nt) * np.timedelta64(6, "h")
    ds = xr.Dataset({f"var_{c:02d}": (("time", "latitude", "longitude"), data[:, c]) for c in range(nc)},
                    coords={"time": times, "latitude": lat, "longitude": lon})
    canonical = mod("data.source").canonicalize(ds)
    shards = folder / "shards"
    for i, a in enumerate(range(0, nt, nt // 2)):
        mod("data.shard").write_shard(canonical, a, min(a + nt // 2, nt), shards / f"block_{i:04d}.zarr")
    x = data.astype(np.float64)
    stats = {"channels": mod("data.source").channel_names(canonical), "mean": x.mean((0, 2, 3)).tolist(),
             "std": x.std((0, 2, 3)).tolist(), "diff_std": np.diff(x, axis=0).std((0, 2, 3)).tolist(),
             "time_step_hours": 6, "lead_hours": 6, "train": [str(times[0]), str(times[-1])]}
    (folder / "stats.json").write_text(json.dumps(stats))
    return shards, folder / "stats.json"


RUN_MARK = "FORGE_GPU_CHECK_RUN"  # in the environment of every process of a run, whatever session it starts


def kill_run(mark: str) -> int:
    """SIGKILL every process whose environment carries RUN_MARK=mark: torchrun, its workers (which torchrun starts
    in sessions of their own, so killing its process group misses them) and their data-loader workers."""
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if f"{RUN_MARK}={mark}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
        except (OSError, ValueError):  # gone already, or not ours
            continue
    return killed


def launch(run: dict, size: dict, nproc: int, box: float, folder: Path) -> dict:
    """One torchrun of this script in --worker mode; after `box` seconds every process of it is killed."""
    result = folder / f"{run['model']}-{run['strategy']}.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           __file__, "--worker", json.dumps({**run, "size": size, "result": str(result)})]
    mark = f"{os.getpid()}-{run['model']}-{run['strategy']}"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1" if nproc > 1 else "4"),
           RUN_MARK: mark}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        code = proc.wait(timeout=box)
    except subprocess.TimeoutExpired:
        kill_run(mark)
        proc.wait()
        return {**run, "error": f"timed out after {box:.0f} s (killed)"}
    finally:
        kill_run(mark)  # nothing of a run outlives it (a worker stuck in a collective after a crash, say)
    out = json.loads(result.read_text()) if result.exists() else {**run, "error": f"torchrun exited {code}"}
    out["wall_s"] = time.perf_counter() - t0
    return out


def report(result: dict) -> None:
    name = f"{result['model']:<5} {result['strategy']:<5}"
    if "error" in result:
        print(f"[gpu_check] {name} FAILED: {result['error']}", flush=True)
        return
    r = result
    mfu = f"{100 * r['mfu']:.1f} %" if r.get("mfu") is not None else "n/a (no peak for this device)"
    mem = f"{r['peak_mem_gib']:.1f} GiB" if r.get("peak_mem_gib") is not None else "n/a"
    print(f"[gpu_check] {name} {r['params'] / 1e6:.1f} M params, batch {r['batch']} x {r['world']}: "
          f"step {1e3 * r['step_s']:.1f} ms, {r['samples_per_s']:.1f} samples/s, {r['tflop_per_step']:.2f} TFLOP/step, "
          f"MFU {mfu}, peak memory {mem}, data wait {100 * r['data_wait_share']:.1f} %, queue depth "
          f"{r['queue_depth']:.1f}, loader alone {r['loader_batches_per_s']:.1f} batches/s; bf16 vs fp32 loss over "
          f"{len(r['loss_fp32'])} steps: max rel. diff {r['parity_max_rel']:.2e} "
          f"({'ok' if r['parity_max_rel'] < 0.05 else 'LARGE'}); GPU normalization bitwise = CPU: "
          f"{r['device_norm_equal']}", flush=True)


def orchestrate(args) -> int:
    start = time.perf_counter()
    import torch

    size = dict(SIZES["cpu-smoke" if args.cpu_smoke else "gpu"])
    size["box"] = args.box or size["box"]
    env = environment()
    print("[gpu_check] " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    if not args.cpu_smoke and not torch.cuda.is_available():
        print("[gpu_check] no CUDA device: run with --cpu-smoke for the CPU check", flush=True)
        return 2
    nproc = size["nproc"] or max(1, torch.cuda.device_count())
    folder = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    shards, stats = synthesize(folder, size)
    print(f"[gpu_check] synthesized {size['times']} steps x {size['channels']} channels x {size['nlat']}x"
          f"{size['nlon']} in {time.perf_counter() - start:.0f} s; {nproc} process(es) per run", flush=True)
    results = []
    for model in args.models:
        for strategy in args.strategies:
            run = {"model": model, "strategy": strategy, "shards": str(shards), "stats": str(stats)}
            if time.perf_counter() - start + size["box"] > BUDGET_S and not args.cpu_smoke:
                results.append({**run, "error": "skipped: the 8-minute budget would be exceeded"})
            else:
                results.append(launch(run, size, nproc, size["box"], folder))
            report(results[-1])
    summary = {"environment": env, "size": {k: v for k, v in size.items() if k != "models"},
               "models": size["models"], "runs": results, "seconds": time.perf_counter() - start}
    for path in filter(None, [args.json, os.environ.get("OUT") and Path(os.environ["OUT"]) / "gpu_check.json"]):
        Path(path).write_text(json.dumps(summary, indent=1, default=str))
        print(f"[gpu_check] wrote {path}", flush=True)
    failed = [r for r in results if "error" in r]
    print(f"[gpu_check] {len(results) - len(failed)}/{len(results)} runs finished in {summary['seconds']:.0f} s",
          flush=True)
    return 1 if failed else 0


# ----------------------------------------------------------------------------------------------------------------
# one torchrun worker: rank `RANK` of a run


def worker(spec: dict) -> None:
    import torch
    import torch.distributed as dist

    time.sleep(float(os.environ.get("FORGE_GPU_CHECK_STALL", 0)))  # tests: a run that outlives its time box
    rank, world, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    d = SimpleNamespace(rank=rank, world=world, device=device)
    try:
        result = measure(spec, d)
    except Exception as e:  # noqa: BLE001 - reported, and the next run goes on
        result = {"model": spec["model"], "strategy": spec["strategy"], "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc()[-4000:]}
        print(result["traceback"], file=sys.stderr, flush=True)
    if rank == 0:
        Path(spec["result"]).write_text(json.dumps(result, default=float))
    dist.destroy_process_group()


def build(spec: dict, d, dataset, normalizer):
    import torch

    width, depth, patch = spec["size"]["models"][spec["model"]]
    cfg = SimpleNamespace(name=spec["model"], width=width, depth=depth, patch_size=patch)
    c = len(dataset.channels)
    torch.manual_seed(0)
    net = mod("models").build_model(cfg, c + len(dataset.forcing_names), c, len(dataset.lat), len(dataset.lon))
    net = net.to(d.device)
    delta = torch.as_tensor(normalizer.delta_scale, dtype=torch.float32)
    return net, mod("train").RolloutLoss(net, delta, list(dataset.lat)).to(d.device)


def wrapped(spec: dict, d, dataset, normalizer):
    """(network, loss module to call, optimizer) for the run's strategy; DDP even on one process."""
    import torch

    net, loss_fn = build(spec, d, dataset, normalizer)
    if spec["strategy"] == "fsdp":
        model = mod("train").wrap(net, loss_fn, "fsdp", d)
    else:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(loss_fn, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    return net, model, torch.optim.AdamW(net.parameters(), lr=1e-4)


def train_steps(model, optimizer, batches, bf16: bool, device) -> list[float]:
    from contextlib import nullcontext

    import torch

    losses = []
    for b in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = model(b["state"], b["forcings"], b["targets"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    return [float(x) for x in losses]


def count_flops(spec: dict, d, dataset, normalizer, batch) -> tuple[float, int]:
    """FLOPs of one bf16 forward + backward on this rank's batch, and the parameter count (unwrapped model)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net, loss_fn = build(spec, d, dataset, normalizer)
    with FlopCounterMode(display=False) as counter:
        with torch.autocast(d.device.type, dtype=torch.bfloat16):
            loss = loss_fn(batch["state"], batch["forcings"], batch["targets"])
        loss.backward()
    return float(counter.get_total_flops()), sum(p.numel() for p in net.parameters())


def measure(spec: dict, d) -> dict:
    import torch

    size = spec["size"]
    loader = mod("data.loader")
    normalizer = mod("data.stats").Normalizer.from_json(spec["stats"])
    dataset = loader.WeatherPairs(spec["shards"], normalizer, lead_steps=1)
    workers = max(1, min(size["workers"], (os.cpu_count() or 2) // d.world - 1))
    dl = loader.make_loader(dataset, size["batch"], seed=0, rank=d.rank, world_size=d.world, num_workers=workers,
                            prefetch=size["prefetch"], device=d.device)
    stream = endless(dl)
    fixed = [next(stream) for _ in range(size["parity_steps"])]
    fixed = [{k: v.clone() for k, v in b.items()} for b in fixed]
    equal = same_as_cpu(loader, dataset, fixed[0], size["batch"], d)
    runs = {}
    for bf16 in (False, True):  # loss parity: same initial weights, same batches
        _, model, optimizer = wrapped(spec, d, dataset, normalizer)
        runs[bf16] = train_steps(model, optimizer, fixed, bf16, d.device)
    flops, params = count_flops(spec, d, dataset, normalizer, fixed[0])
    _, model, optimizer = wrapped(spec, d, dataset, normalizer)
    train_steps(model, optimizer, (next(stream) for _ in range(size["warmup"])), True, d.device)
    sync(d.device)
    if d.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(d.device)
    dl.stats(reset=True)
    t0 = time.perf_counter()
    train_steps(model, optimizer, (next(stream) for _ in range(size["steps"])), True, d.device)
    sync(d.device)
    step_s = (time.perf_counter() - t0) / size["steps"]
    data = dl.stats(reset=True)
    loader_rate = loader_alone(stream, size["steps"], d.device)
    peak = PEAK_BF16.get(next((k for k in PEAK_BF16 if k in torch.cuda.get_device_name(d.device)), ""), None) \
        if d.device.type == "cuda" else None
    rel = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(runs[False], runs[True], strict=True)]
    return {"model": spec["model"], "strategy": spec["strategy"], "world": d.world, "batch": size["batch"],
            "workers": workers, "params": params,
            "step_s": step_s, "samples_per_s": size["batch"] * d.world / step_s, "tflop_per_step": flops / 1e12,
            "mfu": flops / step_s / peak if peak else None, "data_wait_share": data["data_wait_share"],
            "queue_depth": data["queue_depth"], "loader_batches_per_s": loader_rate,
            "peak_mem_gib": torch.cuda.max_memory_allocated(d.device) / 2**30 if d.device.type == "cuda" else None,
            "loss_fp32": runs[False], "loss_bf16": runs[True], "parity_max_rel": max(rel),
            "device_norm_equal": equal}


def endless(dl):
    epoch = 0
    while True:
        dl.sampler.set_epoch(epoch)
        yield from dl
        epoch += 1


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def same_as_cpu(loader, dataset, batch: dict, batch_size: int, d) -> bool:
    """The first batch as the loader gave it (on the device, normalized there) against the CPU loader's."""
    cpu = next(iter(loader.make_loader(dataset, batch_size, seed=0, rank=d.rank, world_size=d.world,
                                       pin_memory=False)))
    return all(bool((batch[k].cpu() == cpu[k]).all()) for k in ("state", "targets", "forcings"))


def loader_alone(stream, n: int, device) -> float:
    """Batches per second the loader delivers (to the device) with nothing else running."""
    t0 = time.perf_counter()
    for _ in range(n):
        batch = next(stream)
    batch["state"].sum().item()
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (gloo, 2 processes)")
    parser.add_argument("--models", nargs="+", default=["vit", "unet"], choices=["vit", "unet"])
    parser.add_argument("--strategies", nargs="+", default=["ddp", "fsdp"], choices=["ddp", "fsdp"])
    parser.add_argument("--json", help="also write the JSON summary here")
    parser.add_argument("--box", type=float, help="time box of each run in seconds (default: 150 on a GPU)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
