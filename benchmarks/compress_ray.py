"""The compression search on the local executor and on a local Ray cluster on the same machine: wall
time, whether the two agree, and what Ray costs per task.

    python benchmarks/compress_ray.py [--limit 20000] [--epochs 2] [--finetune-epochs 1] [--cpus N]
                                      [--local-threads 1]

Trains a demo CNN on a stratified subset of Fashion-MNIST (``--limit`` examples per split), then runs the
default plan (20 candidates for this CNN) twice with the default policy: in this process with torch on
``--local-threads`` threads, and as Ray tasks of one CPU each on a local cluster of ``--cpus`` CPUs
(default: every core), as ``assay compress --ray auto`` runs. It prints both wall times, each candidate's
verdict and accuracy on both sides, then the per-task overhead: starting the cluster, a no-op task's round
trip, a batch of no-op tasks, and sending the search's dataset and the model to the workers.

With one local thread, as in each one-CPU task, the models are built byte for byte alike and every
verdict and accuracy must agree. With more local threads the fine-tuned candidates differ in the last
float bits (another summation order), which moves an accuracy by an example or two. Timings differ
between any two runs, so the frontier on the timed axes may differ.
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import tempfile
import time
from typing import Any

import torch

from assay.compress import compress
from assay.compress.base import Context
from assay.data import DataSpec, load_dataset
from assay.env import cpu_info, package_versions
from assay.executor import PackedFolder, RayExecutor
from assay.gate import Policy
from assay.release import Workspace, artifact_dir, train_version
from assay.train import TrainConfig


def _noop(x: int) -> int:
    return x


def _verdicts(doc: dict[str, Any]) -> dict[str, tuple[str, float | None]]:
    return {t["key"]: (t["status"], (t["metrics"].get("accuracy") or {}).get("value")) for t in doc["trials"]}


def _overhead(ex: RayExecutor, ctx: Context, model_folder: PackedFolder) -> None:
    round_trips = []
    for i in range(20):
        start = time.perf_counter()
        ex.submit(_noop, i).result()
        round_trips.append(time.perf_counter() - start)
    n = 200
    start = time.perf_counter()
    ex.map(_noop, [(i,) for i in range(n)])
    batch = (time.perf_counter() - start) / n
    start = time.perf_counter()
    shared = ex.share(ctx)
    put = time.perf_counter() - start
    start = time.perf_counter()
    ex.submit(_noop, shared).result()
    ctx_trip = time.perf_counter() - start
    size = len(pickle.dumps(ctx)) / 2**20
    print(f"no-op task round trip: median {1e3 * statistics.median(round_trips):.1f} ms "
          f"(min {1e3 * min(round_trips):.1f}, max {1e3 * max(round_trips):.1f}) over 20")  # fmt: skip
    print(f"{n} no-op tasks submitted together: {1e3 * batch:.2f} ms per task")
    print(f"the search's context (dataset): {size:.1f} MiB, ray.put {1e3 * put:.0f} ms once, then a task "
          f"reading it {1e3 * ctx_trip:.0f} ms")  # fmt: skip
    print(f"the root model as its files: {sum(map(len, model_folder.files.values())) / 1024:.0f} KiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20000, help="examples per split (stratified)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="the local cluster's CPUs")
    parser.add_argument("--local-threads", type=int, default=1, help="torch threads of the local run")
    args = parser.parse_args()
    torch.set_num_threads(args.local_threads)
    import ray

    cpu = cpu_info()
    versions = package_versions()
    print(f"CPU: {cpu['model']}, flags {cpu['flags']}, {cpu['logical_cores']} logical cores, "
          f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("versions: " + ", ".join(f"{k} {versions.get(k)}" for k in ("torch", "onnxruntime", "ray")))
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.open(tmp)
        spec = DataSpec(kind="fashion-mnist", limit=args.limit)
        data = load_dataset(spec)
        root, _ = train_version(
            ws, "fmnist-cnn", data, spec, arch="cnn", config=TrainConfig(epochs=args.epochs)
        )
        print(f"root {root.ref}: {data.train.n} train, {data.test.n} test examples, {args.epochs} epochs\n")
        policy = Policy.default()
        start = time.perf_counter()
        local = compress(ws, root.ref, policy, finetune_epochs=args.finetune_epochs).document
        local_s = time.perf_counter() - start
        print(f"local executor (torch threads {torch.get_num_threads()}): {len(local['trials'])} candidates "
              f"in {local_s / 60:.2f} min")  # fmt: skip

        start = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - start
        try:
            ex = RayExecutor("auto", cpus=1, memory_gb=2)
            start = time.perf_counter()
            remote = compress(
                ws, root.ref, policy, finetune_epochs=args.finetune_epochs, executor=ex
            ).document
            remote_s = time.perf_counter() - start
            print(f"Ray, {args.cpus} one-CPU tasks at a time: {len(remote['trials'])} candidates in "
                  f"{remote_s / 60:.2f} min ({local_s / remote_s:.2f}x the local executor's speed; "
                  f"the cluster took {init_s:.1f} s to start)\n")  # fmt: skip
            mine, theirs = _verdicts(remote), _verdicts(local)
            for key, (status, accuracy) in theirs.items():
                other = mine.get(key)
                same = "same" if other == (status, accuracy) else f"DIFFERS: ray {other}"
                shown = "-" if accuracy is None else f"{accuracy:.4f}"
                print(f"  {key:<44} {status:<7} accuracy {shown} {same}")
            verdicts = sum(mine[k][0] == v[0] for k, v in theirs.items())
            accuracies = sum(mine[k][1] == v[1] for k, v in theirs.items())
            sizes = remote["frontier"]["size_on_disk"] == local["frontier"]["size_on_disk"]
            print(
                f"\nsame verdict: {verdicts} of {len(theirs)}; same accuracy: {accuracies} of {len(theirs)}; "
                f"same size frontier: {sizes}"
            )
            print(f"frontier (latency b1): local {local['frontier']['latency_p50_b1']}, "
                  f"ray {remote['frontier']['latency_p50_b1']}\n")  # fmt: skip
            ctx = Context(data, finetune_epochs=args.finetune_epochs)
            _overhead(ex, ctx, PackedFolder.of(artifact_dir(ws, root)))
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
