"""The Ray runner: one actor per device, each loading the model once; tunes and edits are its tasks.

An actor asks for a GPU where the cluster has them (one per GPU); on CPUs it gets one CPU (two on
machines with 4 or more) and as many torch threads. Tunes land in the tune cache (give a shared
`--cache-dir` on a multi-node cluster; without one a node that misses a tune trains it again), and every
edit loads its tune from there, so any actor can run any edit. The driver sends each image once
(`ray.put`) and writes every output itself, so only the cache wants a shared folder. A killed actor is
restarted and its task retried once; a task that still fails is recorded as failed.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from ..errors import UnituneError
from .tasks import Failure, Task, one_line, perform

MAX_RESTARTS = 4  # per actor, over the whole run
TASK_RETRIES = 1  # a task whose actor died runs once more on the restarted actor


class EditWorker:
    """A Ray actor holding one loaded `Editor` (made a remote class by `RayRunner`)."""

    def __init__(self, editor_options: dict, threads: int | None):
        self.editor, self.error = None, None
        try:
            import torch

            from ..api import Editor
            from ..loading import quiet_libraries

            if threads:
                torch.set_num_threads(threads)
            quiet_libraries()
            self.editor = Editor.load(**editor_options)
        except Exception as error:  # noqa: BLE001 (reported by `ready`, once, by the driver)
            self.error = one_line(error)

    def ready(self) -> tuple[int, str | None]:
        """(this worker's process id, why its model did not load or None)."""
        return os.getpid(), self.error

    def run(self, image, tune, prompt, edit, mask):
        if self.editor is None:
            return Failure(self.error)
        return perform(self.editor, image, tune, prompt, edit, mask)


@dataclass(frozen=True)
class Placement:
    """How many actors, and what each asks the cluster for."""

    actors: int
    num_cpus: int
    num_gpus: int
    device: str | None  # passed to Editor.load


def placement(resources: dict, device: str | None, workers: int | None, tasks: int) -> Placement:
    """One actor per GPU when the cluster has GPUs (and --device allows CUDA), else one per 1 CPU (2 on
    clusters with 4 CPUs or more); never more than `workers` or than there are tasks to run at once."""
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    if gpus and (device is None or device.startswith("cuda")):
        shape = Placement(gpus, 1, 1, device)
    else:
        per_actor = 1 if cpus < 4 else 2
        shape = Placement(max(1, cpus // per_actor), per_actor, 0, device or "cpu")
    count = min(shape.actors, workers or shape.actors, max(1, tasks))
    return Placement(count, shape.num_cpus, shape.num_gpus, shape.device)


def connect(address: str) -> bool:
    """Connect to the cluster at `address` ("auto": the running one, else start one on this machine).
    Returns whether this call started the connection (and so should end it)."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING}
    if address == "auto":
        try:
            ray.init(address="auto", **quiet)  # $RAY_ADDRESS, or the cluster `ray start` made here
        except ConnectionError:
            ray.init(
                include_dashboard=False, **quiet
            )  # none running: a local one with this machine's CPUs/GPUs
        return True
    _check_reachable(address)
    try:
        ray.init(address=address, **quiet)
    except Exception as error:  # noqa: BLE001 (Ray raises several kinds)
        raise UnituneError(f"could not connect to Ray at {address}: {one_line(error)}") from None
    return True


def _check_reachable(address: str) -> None:
    """Fail in seconds on an address nothing listens at (Ray itself retries for minutes)."""
    if "://" in address:
        address = address.split("://", 1)[1]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UnituneError(f"--ray: expected auto or HOST:PORT, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise UnituneError(f"could not reach Ray at {address}: {error.strerror or error}") from None


class RayRunner:
    """Actors on a Ray cluster; the driver submits tasks to free actors and waits for any to finish."""

    def __init__(self, address: str, editor_options: dict, workers: int | None, tasks: int):
        import ray

        self.ray = ray
        self.actors: list = []
        self.owned = connect(address)
        try:
            self._start(editor_options, workers, tasks)
        except BaseException:
            self.close()
            raise

    def _start(self, editor_options: dict, workers: int | None, tasks: int) -> None:
        ray = self.ray
        shape = placement(ray.cluster_resources(), editor_options.get("device"), workers, tasks)
        self.placement = shape
        remote = ray.remote(EditWorker).options(
            num_cpus=shape.num_cpus,
            num_gpus=shape.num_gpus,
            max_restarts=MAX_RESTARTS,
            max_task_retries=TASK_RETRIES,
        )
        options = {**editor_options, "device": shape.device}
        threads = None if shape.num_gpus else shape.num_cpus
        self.actors = actors = [remote.remote(options, threads) for _ in range(shape.actors)]
        errors = [error for _, error in ray.get([actor.ready.remote() for actor in actors]) if error]
        if errors:
            raise UnituneError(errors[0])  # the model does not load: the same on every worker
        self.free = list(actors)
        self.alive = len(actors)
        self.in_flight: dict = {}  # ObjectRef -> (task, actor)

    @property
    def slots(self) -> int:
        """Tasks that can run at once: one per live actor."""
        return self.alive

    def put_image(self, image):
        return self.ray.put(image)

    def submit(self, task: Task) -> None:
        actor = self.free.pop()
        ref = actor.run.remote(task.image, task.tune, task.prompt, task.edit, task.mask)
        self.in_flight[ref] = (task, actor)

    def wait(self) -> list[tuple[Task, object]]:
        """The tasks finished by now (at least one): [(task, Tuned | EditResult | Failure)]."""
        ray = self.ray
        finished, _ = ray.wait(list(self.in_flight), num_returns=1)
        more, _ = ray.wait(list(self.in_flight), num_returns=len(self.in_flight), timeout=0)
        done = []
        for ref in dict.fromkeys([*finished, *more]):
            task, actor = self.in_flight.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as error:
                outcome = Failure(f"Ray worker failed: {one_line(error)}")
                if not self._usable(actor):
                    self.alive -= 1
                    done.append((task, outcome))
                    continue
            self.free.append(actor)
            done.append((task, outcome))
        return done

    def _usable(self, actor) -> bool:
        """Whether an actor whose task failed at the Ray level answers again (after a restart)."""
        try:
            _, error = self.ray.get(actor.ready.remote())
        except self.ray.exceptions.RayError:
            return False
        return error is None

    def close(self) -> None:
        for actor in self.actors:  # free their CPUs/GPUs now, also on a cluster this run did not start
            self.ray.kill(actor)
        self.actors = []
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
        self.owned = False
