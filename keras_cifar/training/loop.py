"""One training run: config in, a complete run directory out."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import keras

from keras_cifar import cli
from keras_cifar.data import (
    AlternatingFlip,
    augmentation_from_config,
    evaluation_dataset,
    label_mixing_from_config,
    load_cifar10,
    split_data,
    training_dataset,
)
from keras_cifar.data import steps_per_epoch as count_steps
from keras_cifar.errors import ConfigError, TrainingError
from keras_cifar.evaluation import report_run
from keras_cifar.models import build_model
from keras_cifar.models.registry import check_options
from keras_cifar.run import RunDir, RunRecord, Runtime
from keras_cifar.training import budget, distribute, host
from keras_cifar.training.callbacks import build_callbacks
from keras_cifar.training.optimizers import build_optimizer
from keras_cifar.training.rundir import prepare_run_dir
from keras_cifar.training.schedules import learning_rate
from keras_cifar.training.whitening import FreezeWhiteningBias, init_whitening

# airbench estimates the patch covariance from 5,000 images: enough for a 12x12 matrix, and about a second.
WHITENING_IMAGES = 5000


def resolve_runtime(config) -> Runtime:
    """Precision, compilation and where augmentation runs, each with the reason it was chosen."""
    policy, policy_reason = host.choose_precision(config.precision)
    jit, jit_reason = host.choose_jit(config.jit_compile)
    tf_backend = keras.backend.backend() == "tensorflow"
    if config.augment_in_model == "off" and not tf_backend:
        raise ConfigError(
            "augmentation can only run in tf.data under the TensorFlow backend; use --augment-in-model auto or on"
        )
    in_model = config.augment_in_model == "on" or (config.augment_in_model == "auto" and not tf_backend)
    if in_model and config.flip and config.alternating_flip:
        raise ConfigError("alternating_flip needs augmentation in tf.data (TensorFlow backend, --augment-in-model off)")
    if in_model and (config.mixup or config.cutmix):
        raise ConfigError(
            "mixup and cutmix mix labels too, so they run in tf.data (TensorFlow backend, --augment-in-model off)"
        )
    return Runtime(
        precision=policy,
        precision_reason=policy_reason,
        jit_compile=jit,
        jit_reason=jit_reason,
        augment_in_model=in_model,
    )


def model_options(config) -> dict:
    """The family-specific options a config sets (only those it sets: the others keep the net's defaults)."""
    return {"activation": config.activation} if config.activation else {}


def compile_model(config, runtime, steps_per_epoch, augmentation, epochs):
    keras.mixed_precision.set_global_policy(runtime.precision)
    model = build_model(
        config.arch,
        width_multiplier=config.width_multiplier,
        augmentation=augmentation if runtime.augment_in_model else None,
        dropout=config.dropout,
        bn_momentum=config.bn_momentum,
        **model_options(config),
    )
    model.compile(
        optimizer=build_optimizer(config, learning_rate(config, steps_per_epoch, epochs)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        jit_compile=runtime.jit_compile,
    )
    return model


def prepared_model(config, runtime, split, steps_per_epoch, augmentation, epochs):
    """The compiled model with its patch whitening (if it has one) fitted to the training images; also says
    whether it did, for `pipeline_callbacks`."""
    model = compile_model(config, runtime, steps_per_epoch, augmentation, epochs)
    return model, init_whitening(model, split.x_train[:WHITENING_IMAGES])


def fit_inputs(config, split, runtime, augmentation):
    """The training and validation datasets, and the alternating flip that drives the first (or None)."""
    alternating = AlternatingFlip(config.seed) if config.flip and config.alternating_flip else None
    train_ds = training_dataset(
        alternating.prepare(split.x_train) if alternating else split.x_train,
        split.y_train,
        config.batch_size,
        augmentation=None if runtime.augment_in_model else augmentation,
        seed=config.seed,
        alternating_flip=alternating,
        drop_remainder=config.drop_remainder,
        label_mixing=label_mixing_from_config(config),
    )
    val_ds = evaluation_dataset(split.x_val, split.y_val, config.batch_size) if config.val_split else None
    return train_ds, val_ds, alternating


def pipeline_callbacks(config, alternating, whitened) -> list:
    """Callbacks the data pipeline and the model need, placed before every other callback."""
    callbacks = []
    if whitened and config.whiten_bias_epochs is not None:
        callbacks.append(FreezeWhiteningBias(config.whiten_bias_epochs))
    if alternating:
        callbacks.append(alternating.callback())
    return callbacks


def planned_epochs(config, record, runtime, split, steps_per_epoch, distribution) -> Runtime:
    """The runtime with its epochs: `--epochs`, or under `--time-budget` the epochs that fit it (kept from the
    first attempt's record on a resume)."""
    if not config.time_budget:
        return dataclasses.replace(runtime, epochs=config.epochs)
    if record is not None:
        return dataclasses.replace(
            runtime,
            epochs=record.runtime["epochs"],
            seconds_per_step=record.runtime.get("seconds_per_step"),
            seconds_per_epoch=record.runtime.get("seconds_per_epoch"),
        )
    # The probe has its own pipeline and random layers, so the run's data order is the same with or without a
    # budget; the pipeline's are built outside the strategy's scope, as the run's are.
    batches, _, _ = fit_inputs(config, split, runtime, augmentation_from_config(config))
    with distribution.scope():
        model = compile_model(config, runtime, steps_per_epoch, augmentation_from_config(config), epochs=1)
        measured = budget.probe(model, batches, max_steps=steps_per_epoch)
    epoch_seconds = measured.epoch_seconds(steps_per_epoch, len(split.y_val), config.batch_size)
    epochs = budget.epochs_for_budget(
        config.time_budget * 60, measured, steps_per_epoch, len(split.y_val), config.batch_size
    )
    print(
        f"time budget {config.time_budget:g} min at {measured.step:.2f} s/step, {epoch_seconds:.0f} s/epoch with "
        f"validation and checkpoints: {epochs:g} epochs",
        flush=True,
    )
    return dataclasses.replace(runtime, epochs=epochs, seconds_per_step=measured.step, seconds_per_epoch=epoch_seconds)


def fit_verbosity(verbose: int | None, stream=None) -> int:
    """A progress bar for a person at a terminal; one line per epoch for a log file (a bar's redraws garble it)."""
    if verbose is not None:
        return verbose
    return 1 if cli.on_terminal(stream) else 2


def fit_model(model, config, train_ds, val_ds, callbacks, epochs, initial_epoch=0):
    """`model.fit` as every run trains, for `train` and a tuning trial alike, and a refusal when the loss became
    NaN/inf (TerminateOnNaN stopped the fit) instead of a broken model reported as trained."""
    # shuffle=False: the dataset reshuffles itself each epoch; Keras cannot shuffle a tf.data pipeline anyway.
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=math.ceil(epochs),  # a fractional run's last epoch is cut short by StopAtStep
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=fit_verbosity(config.verbose),
        shuffle=False,
    )
    losses = history.history.get("loss", [])
    if losses and not math.isfinite(losses[-1]):
        raise TrainingError(
            f"the training loss became NaN/inf in epoch {initial_epoch + len(losses)} (lr {config.lr}, "
            f"{config.optimizer}); the run stopped. Lower --lr or use --precision float32, then "
            "start a new --run-dir"
        )
    return history


def _describe(distribution: dict) -> str:
    if distribution["strategy"] == "none":
        return ""
    return (
        f"; --strategy {distribution['strategy']}: {distribution['replicas']} replicas of "
        f"{distribution['per_replica_batch']} images, worker {distribution['worker_index']} of "
        f"{distribution['workers']} ({distribution['role']})"
    )


def train(config, extra_callbacks=()) -> Path:
    """Train, keep the best model on validation, evaluate it once on the test set, write every output.

    `extra_callbacks` run after the run's own (benchmarks use this to observe a run without changing it).
    Under `--strategy multiworker` every worker trains; a worker other than the chief does the same work
    into a scratch directory that is removed when it ends, so only the chief's run directory remains.
    """
    distribution = distribute.build(config.strategy)
    if distribution.is_chief:
        return _train(config, distribution, extra_callbacks)
    scratch = distribute.scratch_dir(Path(config.run_dir), distribution.worker_index)
    shutil.rmtree(scratch, ignore_errors=True)  # a killed attempt's; the chief's backup is what counts
    try:
        _train(dataclasses.replace(config, run_dir=str(scratch)), distribution, extra_callbacks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return Path(config.run_dir)


def _train(config, distribution, extra_callbacks) -> Path:
    """One worker's part of `train`: the model is built and fitted inside the distribution's scope; the test
    report is the chief's alone (it loads the saved model outside the scope, so no other worker takes part)."""
    # Everything that can reject the data or the batch size runs before the run directory is made.
    per_replica_batch = distribution.per_replica_batch(config.batch_size)
    check_options(config.arch, model_options(config))
    data = load_cifar10(config.data_dir, config.source)
    split = split_data(data, config.val_split, config.seed, config.train_limit, config.val_limit, config.test_limit)
    steps_per_epoch = count_steps(split.sizes()["train"], config.batch_size, config.drop_remainder)
    config, run, resumed = prepare_run_dir(config, data.fingerprint)
    with run.lock("train"):
        return _train_locked(
            config, run, resumed, distribution, data, split, steps_per_epoch, per_replica_batch, extra_callbacks
        )


def _train_locked(
    config, run, resumed, distribution, data, split, steps_per_epoch, per_replica_batch, extra_callbacks
) -> Path:
    keras.utils.set_random_seed(config.seed)
    record = run.read_record() if resumed else None
    runtime = dataclasses.replace(
        resolve_runtime(config), distribution={**distribution.describe(), "per_replica_batch": per_replica_batch}
    )
    augmentation = augmentation_from_config(config)
    train_ds, val_ds, alternating = fit_inputs(config, split, runtime, augmentation)
    train_ds = distribute.shard_by_data(train_ds, distribution)
    val_ds = distribute.shard_by_data(val_ds, distribution) if val_ds is not None else None
    runtime = planned_epochs(config, record, runtime, split, steps_per_epoch, distribution)
    with distribution.scope():
        # Built again in the scope for the model: in-model augmentation keeps its random state in variables, which
        # must be created here to be distributed (under JAX's DataParallel they would sit on the first device).
        augmentation = augmentation_from_config(config)
        model, whitened = prepared_model(config, runtime, split, steps_per_epoch, augmentation, runtime.epochs)

    start_epoch = run.completed_epochs() if resumed else 0
    best_so_far = run.trim_history(start_epoch) if resumed else None
    if resumed:
        print(f"Continuing the unfinished run in {run.path} from epoch {start_epoch + 1}", flush=True)
    environment = host.environment()
    if record and record.environment.get("code") != environment["code"]:
        print(
            f"note: the package's code changed since this run started (code {record.environment.get('code')} -> "
            f"{environment['code']}); the epochs before and after the restart ran different code",
            flush=True,
        )
    run.write_record(
        RunRecord(
            config=config.to_dict(),
            runtime=runtime.to_dict(),
            environment=environment,
            recipe=config.recipe,
            data={
                "source": data.source,
                "fingerprint": data.fingerprint,
                "sizes": split.sizes(),
                "class_names": list(data.class_names),
            },
            model={"name": model.name, "parameters": model.count_params()},
        )
    )
    print(
        f"{config.arch}: {model.count_params():,} parameters; {split.sizes()}; precision {runtime.precision} "
        f"({runtime.precision_reason}); XLA {'on' if runtime.jit_compile else 'off'}; run dir {run.path}"
        + _describe(runtime.distribution),
        flush=True,
    )

    callbacks = [
        *pipeline_callbacks(config, alternating, whitened),
        *build_callbacks(
            config,
            run,
            min(split.sizes()["train"], steps_per_epoch * config.batch_size),
            steps_per_epoch,
            runtime.epochs,
            best_so_far,
        ),
    ]
    if distribution.workers > 1 and keras.backend.backend() == "tensorflow":
        distribute.work_around_keras_multiworker(model, distribution.strategy)
        callbacks.append(distribute.FollowChief(distribution.strategy))  # after the backup's restore
    callbacks.extend(extra_callbacks)
    with distribution.scope():
        fit_model(model, config, train_ds, val_ds, callbacks, runtime.epochs)
    if distribution.name != "none":
        print(distribute.worker_summary(model, distribution), flush=True)
    if distribution.is_chief:
        report_run(run, split.x_test, split.y_test, data.class_names, tta=config.tta)
    shutil.rmtree(run / RunDir.BACKUP, ignore_errors=True)
    return run.path
