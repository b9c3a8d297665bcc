"""Curvature against the peers (issue 23, item 4): the Hessian's top eigenvalue, top 5, trace and
spectral density on an MLP, a CNN with BatchNorm and a small transformer, by ours
(landscape.HessianOperator and its estimators), PyHessian 0.1, curvlinops 3.0.1 and
hessian-eigenthings 1.0.0a5, in one run.

Each (model, tool, operation) runs in a fresh process, one thread, on the same model, data and loss
(the whole data as one batch, eval mode, cross-entropy, attention on the math SDPA kernel for
everyone: the fused CPU kernel has no second derivative). Repeat r draws every tool's random starts
and probes from seed r (its seed argument, torch's and numpy's global generators, scipy's eigsh
start): how many products power iteration needs depends on its start (PyHessian on the transformer:
7 to 35 over seeds 0-9). Reported: seconds (median of --repeat processes), Hessian-vector products
used (counted where each tool multiplies; median, and the range when the seeds differ), the value,
and the peak memory above the process's state after set-up (the model and data built, before the
tool is): resident memory, or with --heap on Linux the live heap's peak (benchmarks/heappeak.c,
compiled with gcc and preloaded: what the tool allocated, without the allocator's few MB of
resident noise). Ratios are the time of the fastest peer as accurate (eigenvalues within 1% of
ARPACK's, curvlinops' eigsh; a trace or density from all its products) over ours (> 1: ours is
faster); the floor is the time of one product through a kept graph (ours, measured after 3 warm-up
products) times the products ours used. A trace is as accurate as Hutchinson's over 100 probes when
it used them all or its standard error is at most that of ours over 100 probes.

  top      the top eigenvalue, stopped when the estimate changes by less than 1e-3 (relative),
           at most 100 products (PyHessian's defaults): PyHessian's and hessian-eigenthings'
           power iteration, our Lanczos without reorthogonalization (top_eigenvalue); curvlinops
           has none: scipy's eigsh(k=1, tol=1e-3) on its to_scipy()
  top5     the 5 largest: ours Lanczos (eigenpairs, residual tolerance 1e-3), PyHessian's
           eigenvalues(top_n=5) (deflated power iteration), curvlinops eigsh(k=5, which="LA",
           tol=1e-3), hessian-eigenthings lanczos(k=5, which="LA", tol=1e-3)
  trace    Hutchinson, 100 Rademacher probes (PyHessian: trace(maxIter=100, tol=-inf)), with its
           standard error where the tool gives the probes' values (ours, PyHessian)
  ours_plus  our other estimator, where there is one: Lanczos with full reorthogonalization
           and a residual rule for the top eigenvalue (eigenpairs(k=1)); for the trace
           split_trace, the GGN's trace exactly plus Hutchinson's on the rest, probes drawn
           until its standard error is at most ours' over 100 probes in the same run (exact,
           no product, for the MLP and the CNN: piecewise linear in their parameters); the
           ratios take the faster of ours and ours_plus as accurate
  density  stochastic Lanczos quadrature, one run of 90 steps (curvlinops: Papyan's
           lanczos_approximate_spectrum, ncv=90)

    pip install -e ".[peers]"     # then check torch's version: torchvision may replace it
    python benchmarks/curvature.py --repeat 3 --heap    # a 2-core CPU: about 15 minutes
    python benchmarks/curvature.py --models mlp --ops top,trace --tools ours,pyhessian
    python benchmarks/curvature.py --device cuda   # a GPU: one process per (model, tool), its
                                                    # operations in turn (CUDA's set-up is seconds)

On a GPU, each operation is timed after one untimed run of it in the same process (the
kernels a tool uses load lazily on first use, 20-100 ms on an H200, more than a small model's
whole measurement), between CUDA synchronizations; memory is the peak of CUDA's allocator
above the set-up's.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from peers import user_data, user_model  # benchmarks/peers.py, same folder
from sweep import machine, sync  # benchmarks/sweep.py, same folder
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import landscape

MODELS = ("mlp", "cnn", "transformer")
OPS = ("top", "top5", "trace", "density")
TOOLS = ("ours", "ours_plus", "pyhessian", "curvlinops", "eigenthings")


class Transformer(nn.Module):
    """Token ids [B, 16] -> 4 class scores: an embedding, one encoder layer, a mean-pooled head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        self.encoder = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids)).mean(1))


def setting(name: str, device: str = "cpu") -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """(model in eval mode, inputs, labels) on `device`, the same in every process."""
    model, x, y = _setting(name)
    return model.to(device), x.to(device), y.to(device)


def _setting(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if name == "mlp":  # peers.py's user model and data: 5 hidden ReLU layers of 64, 1,000 points
        x, y = user_data(1000, 1)
        return user_model(64, 5), x, y
    torch.manual_seed(0)
    if name == "cnn":
        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

        model = nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64), nn.Flatten(),
                              nn.Linear(64 * 2 * 2, 10))
        for m in model.modules():  # running statistics that are not the identity
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
        return model.eval(), torch.randn(256, 3, 16, 16, generator=g), torch.randint(
            0, 10, (256,), generator=g)
    return Transformer().eval(), torch.randint(0, 50, (256, 16), generator=g), torch.randint(
        0, 4, (256,), generator=g)


def counted(obj: Any, name: str, width: Callable[[Any], int]) -> list[int]:
    """Wraps obj.name to count the products it is asked for; the list's one entry is the count."""
    count = [0]
    inner = getattr(obj, name)

    def wrapper(*args, **kwargs):
        count[0] += width(args)
        return inner(*args, **kwargs)

    setattr(obj, name, wrapper)
    return count


def ours(model, x, y, op: str, seed: int) -> tuple[Any, int]:
    H = landscape.HessianOperator(model, (x, y))
    if op == "top":
        value = landscape.top_eigenvalue(H, tolerance=1e-3, seed=seed)[0]
    elif op == "top5":
        value = landscape.eigenpairs(H, k=5, tolerance=1e-3, seed=seed)[0].tolist()
    elif op == "trace":
        value = landscape.hutchinson_trace(H, probes=100, seed=seed)
    else:
        value = landscape.spectral_density(H, iterations=90, seed=seed).moment(1)
    return value, H.products


def ours_plus(model, x, y, op: str, seed: int) -> tuple[Any, int] | None:
    """Our other estimator where it needs fewer products for the same accuracy: Lanczos for the
    top eigenvalue (residual tolerance 1e-3); for the trace the split trace (the GGN's exactly,
    Hutchinson's on the rest until its standard error is at most ours' with 100 probes, which
    the parent passes in TRACE_STDERR), its products those of the rest."""
    H = landscape.HessianOperator(model, (x, y))
    if op == "top":
        value = float(landscape.eigenpairs(H, k=1, tolerance=1e-3, seed=seed)[0][0])
    elif op == "trace":
        products = counted(landscape.Operator, "matmat", lambda args: len(args[1]))
        target = os.environ.get("TRACE_STDERR")
        found = landscape.split_trace(H, probes=100, stderr=float(target) if target else None,
                                      seed=seed)
        return found, products[0]
    else:
        return None
    return value, H.products


def pyhessian(model, x, y, op: str, seed: int) -> tuple[Any, int]:
    """Draws from torch's global generator, seeded by one() before each call."""
    import pyhessian  # noqa: F401  (the package's `hessian` class hides its module)

    module = sys.modules["pyhessian.hessian"]
    count = counted(module, "hessian_vector_product", lambda args: 1)
    H = module.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=x.is_cuda)
    if op in ("top", "top5"):
        values = H.eigenvalues(maxIter=100, tol=1e-3, top_n=1 if op == "top" else 5)[0]
        value = values[0] if op == "top" else values
    elif op == "trace":
        # tol=-inf: all 100 probes (its test divides by the running mean, not its absolute
        # value, so with tol=0 a negative mean stops it: the CNN, seeds 1 and 2, 2 probes)
        samples = np.asarray(H.trace(maxIter=100, tol=-math.inf), dtype=float)
        value = (float(samples.mean()), float(samples.std(ddof=1) / np.sqrt(len(samples))))
    else:
        nodes, weights = H.density(iter=90, n_v=1)
        value = float(sum(n * w for n, w in zip(nodes[0], weights[0])))
    return value, count[0]


def curvlinops(model, x, y, op: str, seed: int) -> tuple[Any, int]:
    import curvlinops as c
    from scipy.sparse.linalg import eigsh

    H = c.HessianLinearOperator(model, nn.CrossEntropyLoss(), list(model.parameters()),
                                [(x, y)], check_deterministic=False)
    count = counted(H, "_matmat", lambda args: args[0][0].shape[-1])
    if op in ("top", "top5"):
        k = 1 if op == "top" else 5
        start = np.random.default_rng(seed).standard_normal(H.shape[0])  # ARPACK's is fixed
        values = sorted(eigsh(H.to_scipy(), k=k, which="LA", tol=1e-3, v0=start)[0],
                        reverse=True)
        value = float(values[0]) if op == "top" else [float(v) for v in values]
    elif op == "trace":
        value = float(c.hutchinson_trace(H, 100))
    else:
        grid, density = c.lanczos_approximate_spectrum(H, ncv=90)
        value = float((grid * density).sum() * (grid[1] - grid[0]))
    return value, count[0]


def eigenthings(model, x, y, op: str, seed: int) -> tuple[Any, int]:
    import hessian_eigenthings as he

    H = he.HessianOperator(model, [(x, y)], he.supervised_loss(F.cross_entropy))
    count = counted(H, "matvec", lambda args: 1)
    if op == "top":
        value = he.power_iteration_one(H, max_iter=100, tol=1e-3, seed=seed)[0]
    elif op == "top5":
        value = he.lanczos(H, k=5, which="LA", tol=1e-3, seed=seed).eigenvalues.tolist()
    elif op == "trace":
        value = he.hutchinson(H, num_samples=100, seed=seed).estimate
    else:
        found = he.spectral_density(H, num_runs=1, lanczos_steps=90, seed=seed)
        value = float((found.raw_eigenvalues * found.raw_weights).sum())
    return value, count[0]


def floor_product(model, x, y) -> float:
    """Seconds of one product through our kept graph."""
    H = landscape.HessianOperator(model, (x, y))
    v = torch.randn(1, H.shape[0], device=x.device)
    for _ in range(3):
        H.matmat(v)
    sync(x.device)
    tic = time.perf_counter()
    for _ in range(10):
        H.matmat(v)
    sync(x.device)
    return (time.perf_counter() - tic) / 10


def warm_up(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """A double backward on two rows (on a GPU on all of them: its kernels for these shapes
    load lazily), so that no tool pays torch's first-call set-up (about 0.5 s: more than a small
    model's whole measurement). torch._dynamo is imported here too: torch imports it lazily at
    the first optimizer or torch.func backward of a process (1.3 s on this 2-core CPU), which a
    training loop or a notebook has long paid, for any tool."""
    import torch._dynamo  # noqa: F401

    params = list(model.parameters())
    rows = len(x) if x.is_cuda else 2
    grads = torch.autograd.grad(F.cross_entropy(model(x[:rows]), y[:rows]), params,
                                create_graph=True)
    torch.autograd.grad(grads, params, [torch.ones_like(p) for p in params], allow_unused=True)


def one(model_name: str, tool: str, ops: str, device: str, seed: int) -> list[dict]:
    """The child process: one measurement per operation (comma-separated), as a JSON line;
    the tool's random starts and probes from `seed` (its own argument, and the global
    generators of torch and numpy, which some peers draw from)."""
    torch.set_num_threads(1)
    model, x, y = setting(model_name, device)
    cuda, heap = x.is_cuda, preloaded_heap()
    found_all = []
    with sdpa_kernel(SDPBackend.MATH):
        if tool == "floor":
            return [{"seconds": floor_product(model, x, y)}]
        warm_up(model, x, y)
        for op in ops.split(","):
            if cuda:  # as GPU timings are taken: after one untimed run (kernels load lazily)
                try:
                    seeded(seed)
                    globals()[tool](model, x, y, op, seed)
                except Exception:  # noqa: BLE001  (reported by the timed run below)
                    pass
            sync(x.device)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            elif heap:
                heap.heap_peak_reset()
                base = heap.heap_live_bytes()
            else:
                base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            seeded(seed)
            tic = time.perf_counter()
            try:
                found = globals()[tool](model, x, y, op, seed)
            except Exception as error:  # noqa: BLE001  (a peer's failure is a result)
                found_all.append({"error": f"{type(error).__name__}: {error}"[:120]})
                continue
            sync(x.device)
            seconds = time.perf_counter() - tic
            if found is None:
                found_all.append({"skip": True})
                continue
            value, products = found
            stderr = None
            if op == "trace" and isinstance(value, (tuple, list)):  # (value, standard error)
                value, stderr = float(value[0]), float(value[1])
            if cuda:
                peak = (torch.cuda.max_memory_allocated() - base) / 2**20
            elif heap:
                peak = (heap.heap_peak_bytes() - base) / 2**20
            else:
                peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base, 0) / 1024
            found_all.append({"seconds": seconds, "value": value, "products": products,
                              "memory_mb": peak, "stderr": stderr})
    return found_all


def preloaded_heap() -> Any:
    """heappeak.c's counters if it is preloaded into this process (--heap), else None."""
    found = ctypes.CDLL(None)
    if not hasattr(found, "heap_peak_bytes"):
        return None
    found.heap_peak_bytes.restype = found.heap_live_bytes.restype = ctypes.c_long
    return found


def built_heap() -> str:
    """heappeak.c compiled (gcc) beside the system's temporary files; its path."""
    source = Path(__file__).with_name("heappeak.c")
    built = Path(tempfile.gettempdir()) / "landscape-heappeak.so"
    if not built.exists() or built.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(built), str(source), "-ldl"],
                       check=True)
    return str(built)


def seeded(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def trace_target(measured: dict) -> float | None:
    """The median standard error of ours' 100-probe Hutchinson trace measured so far."""
    errors = [r["stderr"] for r in measured.get(("ours", "trace"), []) if r.get("stderr")]
    return statistics.median(errors) if errors else None


def spawn(model_name: str, tool: str, ops: str, device: str, seed: int = 0,
          **env: str) -> list[dict]:
    """One child process measuring `ops` in turn, its random draws from `seed` (`env`: more
    environment variables); a failure is each op's result."""
    out = subprocess.run([sys.executable, __file__, "--device", device, "--seed", str(seed),
                          "--one", model_name, tool, ops], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or ["?"]
        error = next((t for t in reversed(lines) if "Error" in t), lines[-1])[:120]
        return [{"error": error}] * len(ops.split(","))
    return json.loads(out.stdout.strip().splitlines()[-1])


def agrees(op: str, r: dict, reference: Any, target: float | None) -> bool:
    """Whether an answer `r` is as accurate as ours: eigenvalues within 1% of ARPACK's
    (curvlinops' eigsh), each of the top 5 alike; a density from all 90 products; a trace from
    all 100 Hutchinson probes (one that stops early is not as accurate), or with a standard
    error at most `target`, ours over 100 probes in the same run."""
    if op == "trace":
        stderr = r.get("stderr")
        return r["products"] >= 99 or (stderr is not None and target is not None
                                       and stderr <= target)
    if op == "density":
        return r["products"] >= 90
    if reference is None:
        return True
    values, expected = np.atleast_1d(r["value"]), np.atleast_1d(reference)
    return bool(np.all(np.abs(values - expected) <= 1e-2 * np.abs(expected)))


def summary(found: list[dict], op: str, reference: Any, target: float | None) -> dict:
    """A tool's runs of one operation as one row: the median seconds, products and memory, the
    products' range over the runs' seeds, the last run's value, and whether every run was as
    accurate as ours (agrees); a failure or a skip as it came."""
    good = [r for r in found if "seconds" in r]
    if not good:
        return found[-1]
    products = [r["products"] for r in good]
    return {**good[-1], **{key: statistics.median(r[key] for r in good)
                           for key in ("seconds", "memory_mb")},
            "products": int(statistics.median(products)),
            "spread": f"({min(products)}-{max(products)})" if min(products) < max(products) else "",
            "accurate": all(agrees(op, r, reference, target) for r in good)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--repeat", type=int, default=1, help="fresh processes per measurement")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--heap", action="store_true",
                        help="CPU memory as the live heap's peak (heappeak.c, needs gcc)")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "TOOL", "OP"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.device, args.seed)))
        return
    tools, ops = args.tools.split(","), args.ops.split(",")
    if args.heap:  # inherited by every measuring process
        os.environ["LD_PRELOAD"] = built_heap()
    print(machine(torch.device(args.device)))
    memory = "CUDA allocator" if args.device != "cpu" else "heap" if args.heap else "resident"
    print(f"1 thread per process, median of {args.repeat}; load {os.getloadavg()[0]:.1f}; "
          f"memory: {memory}")
    for model_name in args.models.split(","):
        model, _, _ = setting(model_name)
        floor = statistics.median(spawn(model_name, "floor", "", args.device)[0]["seconds"]
                                  for _ in range(args.repeat))
        print(f"\n{model_name}: {sum(p.numel() for p in model.parameters()):,} parameters; one "
              f"product through a kept graph {floor * 1e3:.2f} ms")
        # a CPU process per operation (memory is the process's peak); on a GPU, per tool
        batches = [[op] for op in ops] if args.device == "cpu" else [ops]
        measured = {(tool, op): [] for tool in tools for op in ops}
        for repeat in range(args.repeat):  # repeat r: every tool's draws from seed r
            for tool in tools:
                for batch in batches:
                    env = {}
                    if tool == "ours_plus" and "trace" in batch and trace_target(measured):
                        env["TRACE_STDERR"] = str(trace_target(measured))  # for the split
                    for op, r in zip(batch, spawn(model_name, tool, ",".join(batch),
                                                  args.device, repeat, **env)):
                        measured[tool, op].append(r)
        for op in ops:
            curvlinops_runs = [r for r in measured.get(("curvlinops", op), []) if "value" in r]
            reference = curvlinops_runs[-1]["value"] if curvlinops_runs else None
            target = trace_target(measured) if op == "trace" else None
            results = {tool: summary(measured[tool, op], op, reference, target) for tool in tools}
            for tool, r in results.items():
                if "skip" in r:
                    continue
                if "error" in r:
                    print(f"  {op:<8} {tool:<12} failed: {r['error']}")
                    continue
                value = r["value"]
                shown = (f"{value:.5g}" if isinstance(value, float) else
                         "[" + ", ".join(f"{v:.4g}" for v in value) + "]")
                if r.get("stderr") is not None:
                    shown += f" +- {r['stderr']:.3g}"
                off = "" if r["accurate"] else (
                    "  (less accurate: fewer products or a larger error)" if op in (
                        "trace", "density") else "  (off ARPACK's by over 1%)")
                print(f"  {op:<8} {tool:<12} {r['seconds']:8.3f} s  {r['products']:4d} products"
                      f" {r['spread']:>9}  {r['memory_mb']:7.1f} MB  {shown}{off}")
            peers = [r["seconds"] for t, r in results.items()
                     if not t.startswith("ours") and "seconds" in r and r["accurate"]]
            mine = min((r for t, r in results.items() if t.startswith("ours") and "seconds" in r
                        and r["accurate"]),
                       key=lambda r: r["seconds"], default={})
            if peers and "seconds" in mine:
                to_floor = (f"{mine['seconds'] / (floor * mine['products']):.2f}"
                            if mine["products"] else "- (no product)")
                print(f"  {op:<8} fastest peer as accurate / ours "
                      f"{min(peers) / mine['seconds']:.2f}; ours / floor {to_floor}")


if __name__ == "__main__":
    main()
