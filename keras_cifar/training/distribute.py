"""Training on several devices or machines (`--strategy mirrored|multiworker`).

TensorFlow backend: `tf.distribute.MirroredStrategy` (every local GPU, or the CPU when there is none) or
`tf.distribute.MultiWorkerMirroredStrategy` (one process per machine, the cluster read from `TF_CONFIG`).
Variables are created inside the strategy's scope, so they are mirrored; Keras's fit then splits each global
batch over the replicas and all-reduces the gradients.

JAX backend: `keras.distribution.DataParallel` over every device; `multiworker` first joins the processes
with `keras.distribution.initialize` (JAX's multi-process runtime), its addresses taken from the same
`TF_CONFIG`, so one setting describes the cluster under either backend. Tested here on CPU only:
DataParallel over two XLA CPU devices in one process; JAX's multi-process path was not run (it needs one
accelerator host per process, or a CPU collectives setup), nor resuming it (see `FollowChief`).

Every worker runs the same callbacks (checkpoints, logs, backup), as TensorFlow's multi-worker Keras tutorial
does, so no worker skips work another one waits on; only the chief's files are kept. The chief (worker 0)
writes the run directory, the other workers a scratch directory that is removed when they finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import keras

from keras_cifar.errors import ConfigError

_TF_CONFIG_EXAMPLE = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'


@dataclasses.dataclass(frozen=True)
class Distribution:
    """How a run is spread: the strategy, its replica count and this process's place among the workers."""

    name: str = "none"
    replicas: int = 1
    workers: int = 1
    worker_index: int = 0
    strategy: object = None  # the tf.distribute strategy (TensorFlow) or keras DataParallel (JAX); None alone

    @property
    def is_chief(self) -> bool:
        """Worker 0 is the chief, as in TensorFlow's multi-worker convention when no `chief` task is named."""
        return self.worker_index == 0

    def scope(self):
        """The context in which the model is built and fitted, so its variables are distributed."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def describe(self) -> dict:
        """What config.json records about the distribution of this run."""
        return {
            "strategy": self.name,
            "replicas": self.replicas,
            "workers": self.workers,
            "worker_index": self.worker_index,
            "role": "chief" if self.is_chief else "worker",
        }

    def per_replica_batch(self, global_batch: int) -> int:
        """`--batch-size` is the global batch; each replica gets an equal share of it."""
        if global_batch % self.replicas:
            raise ConfigError(
                f"batch_size {global_batch} is the global batch and must divide evenly over the "
                f"{self.replicas} replicas of --strategy {self.name}; use a multiple of {self.replicas}"
            )
        return global_batch // self.replicas


def cluster_from_tf_config() -> tuple[list[str], int]:
    """The workers' `host:port` addresses and this process's index, read and checked from `TF_CONFIG`."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError(
            f"--strategy multiworker reads the cluster from the TF_CONFIG environment variable, which "
            f"is not set; set it on every machine, e.g. TF_CONFIG='{_TF_CONFIG_EXAMPLE}' (index 0 "
            f"on the chief, 1 on the next machine)"
        )
    try:
        spec = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({exc}); expected e.g. '{_TF_CONFIG_EXAMPLE}'") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    workers = cluster.get("worker") if isinstance(cluster, dict) else None
    if not (isinstance(workers, list) and workers and all(isinstance(w, str) and ":" in w for w in workers)):
        raise ConfigError(f"TF_CONFIG needs cluster.worker, a list of host:port addresses; got {raw!r}")
    if set(cluster) != {"worker"}:
        raise ConfigError(
            f"TF_CONFIG: only 'worker' jobs are supported (worker 0 is the chief); got jobs {sorted(cluster)}"
        )
    if not isinstance(task, dict) or task.get("type") != "worker":
        raise ConfigError(f'TF_CONFIG needs task: {{"type": "worker", "index": N}}; got {task!r}')
    index = task.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(workers):
        raise ConfigError(f"TF_CONFIG task.index must be an integer from 0 to {len(workers) - 1}; got {index!r}")
    return workers, index


def build(name: str) -> Distribution:
    """The distribution `--strategy NAME` asks for on the active backend; create it before anything else
    touches the runtime (MultiWorkerMirroredStrategy and JAX's multi-process start-up both require that)."""
    if name == "none":
        return Distribution()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _tensorflow(name)
    if backend == "jax":
        return _jax(name)
    raise ConfigError(f"--strategy {name} needs the TensorFlow or JAX backend, not {backend}")


def _tensorflow(name: str) -> Distribution:
    import tensorflow as tf

    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        return Distribution(name, strategy.num_replicas_in_sync, strategy=strategy)
    workers, index = cluster_from_tf_config()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return Distribution(name, strategy.num_replicas_in_sync, len(workers), index, strategy)


def _jax(name: str) -> Distribution:
    workers, index = cluster_from_tf_config() if name == "multiworker" else ([None], 0)
    if name == "multiworker":
        # JAX needs only the coordinator's address (worker 0); every process calls this before any computation.
        keras.distribution.initialize(workers[0], len(workers), index)
    devices = keras.distribution.list_devices()
    return Distribution(name, len(devices), len(workers), index, keras.distribution.DataParallel(devices=devices))


def scratch_dir(run_dir: Path, worker_index: int) -> Path:
    """Where a worker other than the chief writes: a directory in the system's temporary folder named after
    the run and the worker, so a restarted worker replaces the one a killed attempt left rather than adding
    another (its contents are never read back: every worker continues from the chief's backup)."""
    run = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"keras-cifar-{run_dir.name}-{run}-worker{worker_index}"


def shard_by_data(dataset, distribution: Distribution):
    """Under TensorFlow's multi-worker strategy, make each worker keep a different share of every batch.

    The datasets are built from in-memory arrays, so there are no files to split by; TensorFlow's default
    policy (AUTO) would try files, warn, then fall back to this one. Saying DATA outright makes the intent
    explicit: every worker reads the whole (same-seeded) pipeline and keeps its own slice of each global
    batch. Other setups split batches on their own (MirroredStrategy within one process, JAX's
    DataParallel by process), so the dataset is returned unchanged.
    """
    if distribution.name != "multiworker" or keras.backend.backend() != "tensorflow":
        return dataset
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def work_around_keras_multiworker(model, strategy) -> None:
    """Patch the steps of Keras 3.15 that fail under MultiWorkerMirroredStrategy; call it outside the scope.

    Keras 3 fit has not run under this strategy since TF 2.16 (keras-team/keras issue 20585, open at 3.15.1);
    checked here with two CPU workers, it fails in two `strategy.reduce` calls, and a continued run in a
    third place:
    1. Before the first step it traces the model on one batch, got by averaging the first distributed batch
       with a single reduce of the whole (images, labels) tuple; this strategy's reduce takes one tensor at a
       time ("Attempt to convert a value (PerReplica...) to a Tensor"). Here on `model` only, it reduces
       tensor by tensor.
    2. After each step it averages the step's logs over the replicas with `reduce("MEAN", v, axis=0)`, but
       the logs are scalars ("Invalid reduction dimension 0 for input with 0 dimensions"). Here the mean is
       taken over the replicas alone (`axis=None`), which is what the single-worker path computes. This one
       replaces a module function of Keras's trainer, for the process: it runs only under this strategy.
    3. Each time weights are saved or loaded, Keras's saving code builds a throwaway Optimizer (with
       variables) to learn which attributes to skip; its cache of the answer never hits, because it is read
       as `saving_attr_skiplist_Optimizer` and written as `saving_attr_skipset_Optimizer` (also on Keras's
       master). Inside the strategy's scope creating a variable is a broadcast from the chief, so every
       save and load is a collective: when a continued run's chief restores its backup and the others have
       none to load, the workers' collectives no longer match and the run fails ("Collective instance ...
       expected type 1 ... but got type 0"). The answer is computed here, outside the scope, and stored
       under the name Keras reads (per thread: callbacks run on this one).
    Everything else is Keras's own code.
    """
    from keras.src import tree
    from keras.src.backend.common import global_state
    from keras.src.backend.tensorflow import trainer
    from keras.src.saving import saving_lib

    global_state.set_global_attribute("saving_attr_skiplist_Optimizer", saving_lib.get_attr_skipset("Optimizer"))
    keras_build = model._maybe_symbolic_build

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), next(batches))
                break
        keras_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build

    keras_reduce = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return keras_reduce(values, strategy, reduction)

    if keras_reduce.__module__ == trainer.__name__:  # not yet replaced
        trainer.reduce_per_replica = reduce_per_replica


def worker_summary(model, distribution: Distribution) -> str:
    """One line per worker at the end of training: its optimizer steps and a checksum of its weights.

    Workers that stepped together applied the same all-reduced updates, so every worker prints the same
    two numbers although each saw only its share of the data; a worker that fell out of step (or trained on
    its own) prints different ones.
    """
    import numpy as np

    checksum = sum(float(np.abs(keras.ops.convert_to_numpy(w).astype(np.float64)).sum()) for w in model.weights)
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    return (
        f"worker {distribution.worker_index} ({'chief' if distribution.is_chief else 'worker'}): "
        f"{steps} training steps; weights checksum {checksum:.6f}"
    )


class FollowChief(keras.callbacks.Callback):
    """After the backup is restored, every worker takes the chief's weights, optimizer state and epoch.

    Each worker restores only its own backup, and a non-chief's lives in its scratch directory, gone with it,
    so a continued run would have the chief at epoch N and the others at epoch 0: workers that run different
    numbers of steps wait on each other forever. This callback comes after BackupAndRestore and broadcasts
    the chief's restored state (an all-reduce to which only the chief's first replica contributes), so the
    run directory's backup alone decides where a continued run starts. TensorFlow's multi-worker strategy
    only: a JAX multi-process run does not continue from a backup.
    """

    def __init__(self, strategy):
        super().__init__()
        self.strategy = strategy

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        variables = self.model.weights + self.model.optimizer.variables
        values = [tf.convert_to_tensor(v.value) for v in variables]
        values.append(tf.constant(self.model._initial_epoch or 0, tf.int64))  # what BackupAndRestore set

        @tf.function
        def chief_only():
            context = tf.distribute.get_replica_context()
            contributes = tf.equal(context.replica_id_in_sync_group, 0)
            # One tensor per all-reduce: a list is packed into one buffer, which cannot mix int64 and float32.
            return [context.all_reduce("SUM", tf.where(contributes, v, tf.zeros_like(v))) for v in values]

        broadcast = self.strategy.experimental_local_results(self.strategy.run(chief_only))[0]
        for variable, value in zip(variables, broadcast):
            variable.assign(value)
        self.model._initial_epoch = int(broadcast[-1]) or None
