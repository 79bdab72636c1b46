"""The one place that knows about distribution: `tf.distribute` and `keras.distribution`.

    from train.distribution import distributed
    distributed.check(settings)                    # flags and TF_CONFIG; ValueError: one line
    distribution = distributed.start(settings)     # before TensorFlow runs any op
    with distribution.scope():
        model = ...                                # variables mirrored on every replica
    batch = distribution.split(x, y, index)        # one global batch, cut into replica slices
    sums = distribution.run_summed(fn, batch, ...)  # fn on every replica, results summed

`--strategy`:
    default       one process, one device: TensorFlow's default strategy.
    mirrored      one process, `--devices N` replicas (MirroredStrategy). On a
                  machine without GPUs the CPU is split into N logical devices.
    multi-worker  one replica per worker process (MultiWorkerMirroredStrategy).
                  `TF_CONFIG` names the cluster and this process's task; without
                  it, `--workers N` starts N local workers (train/distribution/workers.py).
    data-parallel JAX: Keras 3's own `keras.distribution.DataParallel`, either
                  `--devices N` replicas in this process (N GPUs, or N virtual
                  CPU devices: XLA_FLAGS=--xla_force_host_platform_device_count=N,
                  set before JAX is imported), or one process per machine
                  joined by `jax.distributed.initialize`: `--coordinator
                  HOST:PORT --num-processes N --process-id I`, or `--workers N`
                  local processes on 127.0.0.1 (train/distribution/workers.py).
                  One device a process (one process per GPU). A batch is one global
                  array sharded over all devices, so batch norm always
                  normalizes with the global batch's statistics, and every
                  batch must split evenly (`--drop-remainder` skips an uneven
                  last one).

The global batch. `--batch-size` is the global batch B. Step s of an epoch
takes the samples order[s·B : (s+1)·B] of that epoch's order, exactly as one
process would, and cuts them into R contiguous slices, one per replica in
replica order (sizes differ by at most one, so an uneven last batch is split
too). The optimizer sums the replicas' gradients (Keras 3 all-reduces them in
`apply_gradients`). What each replica minimizes:

- multi-worker (train/run/loop.py): its share of the global mean,
  loss_r = Σ_{i in slice r} ℓ_i / B_step, so the update is ∇ (1/B_step) Σ_i ℓ_i,
  the single-process step up to the order of summation, uneven slices included;
- mirrored (`model.fit`): Keras's own scaling, the mean over its slice divided
  by R. With equal slices that is the same share; an uneven last batch (e.g.
  30 samples over 4 replicas: 8, 8, 7, 7) weights a sample of a shorter slice
  slightly more than the one-process step does;
- data-parallel (JAX): one global array, one mean: every batch must split evenly.
  Under several processes each one feeds its contiguous share of every global
  batch (`Distribution.part`), and JAX assembles the global array from the
  shares in process order: the same batch, the same order.

With synchronized batch norm the forward pass is the single-process one too
(the statistics are those of the whole global batch); without it each replica
normalizes its slice with that slice's own statistics.
"""

import collections
import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import socket
import sys
import time

import numpy as np

STRATEGIES = ("default", "mirrored", "multi-worker", "data-parallel")
# The Keras backend each strategy's engine belongs to.
ENGINES = {"mirrored": "tensorflow", "multi-worker": "tensorflow", "data-parallel": "jax"}

# What one process is in a multi-worker cluster: its place in the replica
# order (the chief first) and the number of workers.
Task = collections.namedtuple("Task", "index workers address")

# How long a JAX process waits for the coordinator and all its peers to join
# (--join-timeout; jax.distributed.initialize's initialization_timeout).
JOIN_TIMEOUT_SECONDS = 60

# How JAX words a CPU collective that failed (see `is_failed_collective`).
GLOO_FAILURE = re.compile(r"\bGloo [\w-]+ failed\b")


@dataclasses.dataclass(frozen=True)
class Distribution:
    """A started strategy and this process's place in it.

    Attributes:
        kind: One of `STRATEGIES`.
        strategy: The `tf.distribute.Strategy`, or None for the default
            strategy (one process, one device, on any backend).
        worker: This process's index among the workers; 0 is the chief,
            the only one that writes the run folder.
        workers: Number of worker processes (1 unless multi-worker, or
            data-parallel over several processes).
    """

    kind: str
    strategy: object = None
    worker: int = 0
    workers: int = 1

    @property
    def replicas(self):
        return self.strategy.num_replicas_in_sync if self.strategy is not None else 1

    @property
    def is_chief(self):
        return self.worker == 0

    @property
    def in_lockstep(self):
        """Whether every process must run every callback: under JAX's global arrays
        a model call, `evaluate` or `save` is a collective of all processes, so the
        other processes write to a private scratch folder what the chief writes to
        the run folder (tf.distribute's other workers skip the chief's callbacks)."""
        return self.kind == "data-parallel" and self.workers > 1

    def part(self, index):
        """This process's share of a global batch's sample indices `index`: the
        contiguous slice it feeds (all of them in one process). Under TensorFlow's
        strategies one process feeds every replica (`split`), so this is for JAX."""
        if not self.in_lockstep:
            return index
        return np.array_split(np.asarray(index), self.workers)[self.worker]

    def scope(self):
        """Variables created inside (model, optimizer) are mirrored on every replica."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def split(self, x, y, index):
        """This step's global batch `x[index]`, `y[index]`, cut into per-replica slices."""
        import tensorflow as tf

        slices = np.array_split(np.asarray(index), self.replicas)

        def replica_slice(context):
            part = slices[context.replica_id_in_sync_group]
            return tf.constant(x[part]), tf.constant(y[part])

        return self.strategy.experimental_distribute_values_from_function(replica_slice)

    def run_summed(self, replica_fn, batch, *args):
        """Runs `replica_fn(x, y, *args)` on every replica; returns its outputs summed
        over all replicas of all workers (call it inside a `tf.function`)."""
        import tensorflow as tf

        outputs = self.strategy.run(replica_fn, args=(*batch, *args))
        return tf.nest.map_structure(
            lambda value: self.strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None),
            outputs,
        )

    def any_worker(self, *flags):
        """For each flag, whether it is true on any worker; the same answer on every
        worker (a collective: every worker must call it at the same point)."""
        if self.workers == 1:
            return tuple(bool(flag) for flag in flags)
        if self.in_lockstep:
            from jax.experimental import multihost_utils

            every = multihost_utils.process_allgather(np.array([float(f) for f in flags]))
            return tuple(bool(total > 0) for total in np.asarray(every).reshape(-1, len(flags))
                         .sum(axis=0))
        import tensorflow as tf

        values = tf.constant([float(flag) for flag in flags])
        totals = _summed_flags(self.strategy, values).numpy()
        return tuple(bool(total > 0) for total in totals)


_SUMMED_FLAGS = {}  # strategy → its traced all-reduce of a flag vector


def _summed_flags(strategy, flags):
    import tensorflow as tf

    if strategy not in _SUMMED_FLAGS:
        _SUMMED_FLAGS[strategy] = tf.function(
            lambda values: strategy.reduce(
                tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(values)), axis=None
            )
        )
    return _SUMMED_FLAGS[strategy](flags)


def default():
    """One process, one device, on any backend."""
    return Distribution("default")


def resolve(settings):
    """Fills in `settings.bn_sync` (default: synchronized under a strategy) and
    `settings.replicas`; returns `settings`."""
    if getattr(settings, "bn_sync", None) is None:
        settings.bn_sync = settings.strategy != "default"
    if settings.strategy == "mirrored":
        settings.replicas = settings.devices or 1
    elif settings.strategy == "multi-worker":
        config = os.environ.get("TF_CONFIG")
        settings.replicas = parse_tf_config(config).workers if config else settings.workers
    else:
        settings.replicas = 1
    return settings


def check(settings):
    """Raises ValueError (one line naming the flag or TF_CONFIG) for an unusable set-up.

    Runs before any data is loaded or any run folder exists.
    """
    kind = settings.strategy
    backend = getattr(settings, "backend", None) or "tensorflow"
    engine = ENGINES.get(kind, backend)
    if engine != backend:
        whose = "tf.distribute's" if engine == "tensorflow" else "keras.distribution's on JAX"
        raise ValueError(f"--strategy {kind} is {whose}: it needs --backend {engine}"
                         f" (got --backend {backend})")
    jit = settings.jit_compile
    if jit != "auto" and kind == "multi-worker":
        raise ValueError(f"--jit-compile {jit}: --strategy multi-worker trains in the project's"
                         " own loop (Keras 3.15's fit fails there, keras issue 20585), which"
                         " has no such choice; leave it auto")
    if jit == "on" and kind == "mirrored":
        raise ValueError("--jit-compile on: XLA failed to compile a step of --strategy"
                         " mirrored on logical CPU devices (TensorFlow: a tf.Variable on a"
                         " different device, see tensorflow.org/xla/known_issues); Keras's auto"
                         " leaves XLA off under tf.distribute")
    if jit == "on" and backend == "torch":
        raise ValueError("--jit-compile on: on PyTorch Keras would compile with torch.compile,"
                         " which this pipeline does not test; use auto or off (both eager)")
    if kind == "data-parallel":
        _check_data_parallel(settings)
        return
    if settings.devices is not None and kind != "mirrored":
        raise ValueError(
            f"--devices needs --strategy mirrored or data-parallel (got --strategy {kind})"
        )
    if settings.workers is not None and kind != "multi-worker":
        raise ValueError("--workers needs --strategy multi-worker or data-parallel"
                         f" (got --strategy {kind})")
    for flag, value in {**_cluster_flags(settings),
                        "--join-timeout": getattr(settings, "join_timeout", None)}.items():
        if value is not None:
            raise ValueError(f"{flag} needs --strategy data-parallel (got --strategy {kind})")
    if kind == "default" and settings.bn_sync:
        raise ValueError(
            "--bn-sync needs a strategy with several replicas (--strategy default has one)"
        )
    if kind == "mirrored":
        if settings.devices is None:
            raise ValueError("--strategy mirrored needs --devices N (N >= 1 replicas)")
        if settings.devices < 1:
            raise ValueError(f"--devices must be >= 1, got {settings.devices}")
    if kind == "multi-worker":
        config = os.environ.get("TF_CONFIG")
        if config:
            task = parse_tf_config(config)
            if settings.workers is not None and settings.workers != task.workers:
                raise ValueError(
                    f"--workers {settings.workers} but TF_CONFIG names {task.workers} workers"
                )
            _check_port_free(task.address, "TF_CONFIG: this task's address")
        elif settings.workers is None:
            raise ValueError(
                "--strategy multi-worker needs --workers N (local worker processes) or TF_CONFIG"
            )
        elif settings.workers < 2:
            raise ValueError(
                f"--workers must be >= 2, got {settings.workers} (one process: --strategy default)"
            )
    replicas = resolve(settings).replicas
    if settings.batch_size < replicas:
        raise ValueError(
            f"--batch-size {settings.batch_size} is the global batch; it must be at least the"
            f" number of replicas ({replicas})"
        )


def _check_data_parallel(settings):
    if settings.bn_sync is False:
        raise ValueError("--no-bn-sync: under JAX data parallelism a batch is one global array,"
                         " so batch norm always uses the global batch's statistics")
    settings.bn_sync = True
    processes = _check_processes(settings)
    if processes:
        if settings.devices is not None:
            raise ValueError(f"--devices {settings.devices} with several processes: every"
                             " process brings one device (--devices is for one process)")
        settings.replicas = processes  # one CPU device each; start() counts GPUs
        what = _replicas_flag(settings)
    else:
        if settings.devices is None or settings.devices < 1:
            raise ValueError("--strategy data-parallel needs --devices N (N >= 1 replicas in"
                             " this process), or --workers N (local processes)")
        settings.replicas = settings.devices
        what = f"--devices {settings.devices}"
    if settings.batch_size % settings.replicas:
        raise ValueError(f"--batch-size {settings.batch_size} does not split evenly over"
                         f" {what} (JAX shards a batch evenly)")
    if not processes:
        _virtual_cpu_devices(settings.devices)


def _cluster_flags(settings):
    """The flags that place a JAX process in a cluster (not settings of the run)."""
    return {flag: getattr(settings, flag[2:].replace("-", "_"), None)
            for flag in ("--coordinator", "--num-processes", "--process-id")}


def _processes(settings):
    """How many JAX processes the run spans (0: one process, no cluster)."""
    if getattr(settings, "coordinator", None):
        return settings.num_processes
    return settings.workers or 0


def _check_processes(settings):
    """Checks --workers or --coordinator/--num-processes/--process-id; returns the
    number of processes (0 for one process)."""
    cluster = _cluster_flags(settings)
    given = [flag for flag, value in cluster.items() if value is not None]
    timeout = getattr(settings, "join_timeout", None)
    if timeout is not None and (not (given or settings.workers) or not 0 < timeout < math.inf):
        raise ValueError(f"--join-timeout {timeout:g}: needs several processes (--workers N or"
                         " --coordinator ...) and a finite time > 0")
    if not given:
        if settings.workers is not None and settings.workers < 2:
            raise ValueError(f"--workers must be >= 2, got {settings.workers} (one process:"
                             " --devices N)")
        return settings.workers or 0
    if len(given) < 3:
        missing = [flag for flag in cluster if flag not in given]
        raise ValueError(f"{given[0]} needs {' and '.join(missing)} too (a JAX cluster:"
                         " --coordinator HOST:PORT --num-processes N --process-id I)")
    count, index = settings.num_processes, settings.process_id
    if count < 2:
        raise ValueError(f"--num-processes must be >= 2, got {count} (one process: --devices N)")
    if not 0 <= index < count:
        raise ValueError(f"--process-id must be in [0, {count - 1}], got {index}")
    if settings.workers is not None and settings.workers != count:
        raise ValueError(f"--workers {settings.workers} but --num-processes {count}")
    host, port = _address(settings.coordinator, "--coordinator")
    try:
        socket.getaddrinfo(host, port)
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ValueError(f"--coordinator {settings.coordinator}: unknown host {host!r}"
                         f" ({reason})") from None
    if index == 0:  # process 0 runs the coordinator service on that port
        _check_port_free(settings.coordinator, "--coordinator")
    return count


def _virtual_cpu_devices(count):
    """Asks XLA for `count` CPU devices (it reads XLA_FLAGS when JAX is imported).

    A machine with GPUs keeps using them: the flag only concerns the CPU platform.
    """
    if "jax" in sys.modules:
        import jax

        if len(jax.devices()) >= count:
            return
        raise ValueError(f"--devices {count}: JAX was set up with {len(jax.devices())} devices"
                         " before this run (start a new process)")
    flag = "--xla_force_host_platform_device_count"
    kept = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(flag)]
    os.environ["XLA_FLAGS"] = " ".join([*kept, f"{flag}={count}"])


def check_batches(settings, samples, what):
    """Raises ValueError (one line) when a data-parallel run's batches do not all split
    evenly over the replicas; `samples`: the training or validation set's size."""
    if settings.strategy != "data-parallel":
        return
    last = samples % settings.batch_size
    if what == "training" and getattr(settings, "drop_remainder", False):
        return
    if last % settings.replicas:
        advice = "choose --batch-size or --validation-split so that it does"
        if what == "training":
            advice = "add --drop-remainder, or " + advice
        raise ValueError(f"--strategy data-parallel: the {samples} {what} samples leave a last"
                         f" batch of {last}, which does not split evenly over"
                         f" {_replicas_flag(settings)} (JAX shards a batch evenly): {advice}")


def _replicas_flag(settings):
    """The flag that set a data-parallel run's replicas, with its value."""
    if settings.devices:
        return f"--devices {settings.devices}"
    if getattr(settings, "coordinator", None):
        return f"--num-processes {settings.num_processes}"
    return f"--workers {settings.workers}"


def needs_local_workers(settings):
    """Whether this command must start its own worker processes: multi-worker
    without TF_CONFIG, data-parallel with --workers and no --coordinator."""
    if settings.strategy == "data-parallel":
        return bool(settings.workers) and not getattr(settings, "coordinator", None)
    return settings.strategy == "multi-worker" and not os.environ.get("TF_CONFIG")


def start(settings):
    """Creates the strategy the settings name. Call it before TensorFlow runs any op:
    splitting the CPU into logical devices is impossible afterwards."""
    kind = settings.strategy
    if kind == "default":
        return default()
    if kind == "data-parallel":
        if not _processes(settings):
            return Distribution(kind, _KerasDataParallel(settings.devices))
        _join_jax_cluster(settings)
        strategy = _KerasDataParallel(None)
        # One device a process: the batch checks made before the cluster existed hold then.
        # (Several local GPUs: run one process per GPU, e.g. with CUDA_VISIBLE_DEVICES.)
        if strategy.num_replicas_in_sync != settings.num_processes:
            raise ValueError(f"--num-processes {settings.num_processes}: the cluster has"
                             f" {strategy.num_replicas_in_sync} devices; every process must"
                             " bring exactly one (one process per GPU)")
        return Distribution(kind, strategy, worker=settings.process_id,
                            workers=settings.num_processes)
    import tensorflow as tf

    if kind == "mirrored":
        return Distribution(kind, tf.distribute.MirroredStrategy(_devices(settings.devices)))
    task = parse_tf_config(os.environ["TF_CONFIG"])
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING
        )
    )
    return Distribution(kind, strategy, worker=task.index, workers=task.workers)


def _join_jax_cluster(settings):
    """`jax.distributed.initialize` for this process, with CPU collectives over gloo.

    JAX aborts the process (no exception) when its coordinator does not answer in
    time, so a process other than 0 first waits here until something listens on
    the coordinator's port: a coordinator that never comes up is one line. A peer
    that never joins still ends in JAX's own abort after the timeout.
    """
    import jax

    timeout = getattr(settings, "join_timeout", None) or JOIN_TIMEOUT_SECONDS
    if settings.process_id != 0:
        _wait_for_listener(settings.coordinator, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=settings.coordinator,
            num_processes=settings.num_processes,
            process_id=settings.process_id,
            initialization_timeout=int(math.ceil(timeout)),
        )
    except Exception as error:  # JAX raises XlaRuntimeError/RuntimeError/ValueError
        text = str(error).strip().splitlines()
        raise ValueError(f"--coordinator {settings.coordinator}: process"
                         f" {settings.process_id} of {settings.num_processes} could not join"
                         f" the cluster ({text[0][:200] if text else type(error).__name__})"
                         ) from None


class _KerasDataParallel:
    """`keras.distribution.DataParallel` over `count` devices (None: every device of
    every process), set for the whole process, with the two things `Distribution`
    asks of a strategy."""

    def __init__(self, count):
        import keras

        devices = keras.distribution.list_devices()
        if count is not None and len(devices) < count:
            raise ValueError(f"--devices {count}: this machine has {len(devices)}"
                             f" ({', '.join(devices)})")
        # Under several processes each one feeds its own share of a batch (Distribution.part).
        self.distribution = keras.distribution.DataParallel(
            devices=devices[:count] if count else devices, auto_shard_dataset=False)
        keras.distribution.set_distribution(self.distribution)
        self.num_replicas_in_sync = count or len(devices)

    def scope(self):
        return self.distribution.scope()


def parse_tf_config(text):
    """Reads a TF_CONFIG value; returns this process's `Task`.

    TF_CONFIG is JSON: {"cluster": {"worker": ["host:port", ...], "chief":
    ["host:port"] (optional)}, "task": {"type": "worker" | "chief", "index": i}}.
    The chief (or worker 0 when there is none) is task 0 and writes the run folder.

    Raises:
        ValueError: one line saying what is wrong with it.
    """
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise ValueError('TF_CONFIG has no "cluster" object')
    cluster = config["cluster"]
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise ValueError(f"TF_CONFIG: task types {unknown} are not supported (chief, worker only)")
    chiefs, workers = cluster.get("chief", []), cluster.get("worker", [])
    if not isinstance(chiefs, list) or not isinstance(workers, list) or len(chiefs) > 1:
        raise ValueError('TF_CONFIG: "chief" must list at most one address, "worker" a list')
    addresses = chiefs + workers
    if len(addresses) < 2:
        raise ValueError(f"TF_CONFIG names {len(addresses)} task(s); a cluster needs at least 2")
    for address in addresses:
        _port(address)
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in ("chief", "worker"):
        raise ValueError('TF_CONFIG: "task" must be {"type": "worker" or "chief", "index": i}')
    members = chiefs if task["type"] == "chief" else workers
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(members):
        raise ValueError(
            f"TF_CONFIG: task index {index!r} is not one of the {len(members)}"
            f" {task['type']} address(es)"
        )
    place = index if task["type"] == "chief" else len(chiefs) + index
    return Task(index=place, workers=len(addresses), address=addresses[place])


def is_failed_collective(error):
    """Whether `error` is an engine's failure of an op: TensorFlow's `OpError` (a
    collective among them), or, under JAX, a gloo collective whose peer went away
    (a `JaxRuntimeError` or `ValueError` "Gloo all-reduce failed: … Connection
    reset by peer", "Gloo AllGather failed: …"); any other JAX error is not.

    An engine that was never imported raised nothing, so neither is imported here.
    """
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(error, tf.errors.OpError):
        return True
    return "jax" in sys.modules and GLOO_FAILURE.search(str(error)) is not None


def leave(distribution, status, lost_peer=False):
    """Returns `status`; a multi-worker process, or a JAX process that `lost_peer`
    (a run's `RunResult.lost_worker`), instead exits with it right away.

    MultiWorkerMirroredStrategy checks its peers from a thread that sleeps 30 s
    between checks, and the strategy's destructor waits for that thread: a
    finished worker would linger up to 30 s (10-12 s measured here). JAX's
    processes meet at a shutdown barrier as they exit; with a peer gone, JAX
    waits there for its heartbeat timeout (100 s) and then aborts the process
    with a stack trace (measured: exit 134 after 92 s). Every file is closed
    by now, so the process exits without either wait.
    """
    if distribution.workers == 1 or (distribution.in_lockstep and not lost_peer):
        return status
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def free_ports(count):
    """`count` distinct TCP ports free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _port(address):
    return _address(address, "TF_CONFIG: address")[1]


def _address(address, what):
    """'host:port' → (host, port); raises ValueError naming `what`."""
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} {address!r} is not host:port")
    return host.strip("[]"), int(port)


def _wait_for_listener(address, timeout):
    """Returns once a TCP connection to `address` succeeds; ValueError after `timeout` s."""
    host, port = _address(address, "--coordinator")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise ValueError(f"--coordinator {address}: nothing answered there in"
                                 f" {timeout:g} s ({error.strerror or error}); start process 0"
                                 " first, or raise --join-timeout") from None
            time.sleep(0.2)


def _check_port_free(address, what):
    """The port TensorFlow's server will listen on must not be taken already."""
    port = _port(address)
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("", port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ValueError(f"{what} {address}: port {port} is already in use") from None
        raise ValueError(
            f"{what} {address}: cannot listen on port {port}: {error.strerror}"
        ) from None
    finally:
        probe.close()


def _devices(count):
    """`count` devices for MirroredStrategy: GPUs if there are enough, else logical CPUs."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if len(gpus) < count:
            raise ValueError(f"--devices {count}: this machine has {len(gpus)} GPU(s)")
        return [f"/gpu:{index}" for index in range(count)]
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError:
        raise ValueError(
            f"--devices {count}: TensorFlow's devices were set up before the CPU could be split"
            " (start a new process)"
        ) from None
    return [f"/cpu:{index}" for index in range(count)]
