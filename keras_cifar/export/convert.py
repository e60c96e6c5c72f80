"""Turning a trained Keras model into deployable files: a SavedModel for TF Serving and TFLite flatbuffers.

Every format starts from a float32 copy of the model: a model trained under `mixed_bfloat16` would otherwise
carry bfloat16 casts into the SavedModel, which TFLite and most phones cannot run. The TFLite files are
converted from the SavedModel's default signature, so all formats take the same input: raw 0–255 RGB.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from keras_cifar.errors import KerasCifarError
from keras_cifar.export.formats import IMAGE_SIGNATURE, UINT8_SIGNATURE
from keras_cifar.export.tflite_metadata import ModelFacts, add_metadata

# Opset 17 (ONNX 1.12, 2022): run by every ONNX Runtime since 1.12 and by most other engines.
ONNX_OPSET = 17


class ExportError(KerasCifarError):
    """A model that cannot be exported to a requested format."""


def float32_copy(model: keras.Model) -> keras.Model:
    """The same network and weights with every layer's dtype policy set to float32."""

    def to_float32(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy":
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: to_float32(value) for key, value in node.items()}
        if isinstance(node, list):
            return [to_float32(value) for value in node]
        return node

    copy = model.__class__.from_config(to_float32(model.get_config()))
    copy.set_weights(model.get_weights())
    return copy


def export_savedmodel(model: keras.Model, directory: Path) -> Path:
    """Write a SavedModel with two signatures: float32 images (JSON clients) and uint8 images (gRPC, raw bytes).

    Both take [N, 32, 32, 3] pixels in 0–255 and return `probabilities` [N, classes].
    """
    import tensorflow as tf

    height, width, channels = model.input_shape[1:]

    def serve(images):
        return {"probabilities": model(images, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        IMAGE_SIGNATURE,
        serve,
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name="images")],
    )
    archive.add_endpoint(
        UINT8_SIGNATURE,
        lambda images: serve(tf.cast(images, tf.float32)),
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")],
    )
    archive.write_out(str(directory), verbose=False)
    return directory


def convert_onnx(model: keras.Model, opset: int = ONNX_OPSET) -> bytes:
    """An ONNX graph of the model's forward pass, with the SavedModel's names: `images` [N, 32, 32, 3] float32
    0-255 in, `probabilities` [N, classes] out (tf2onnx, from the same traced function)."""
    import tensorflow as tf
    import tf2onnx

    height, width, channels = model.input_shape[1:]
    spec = [tf.TensorSpec([None, height, width, channels], tf.float32, name="images")]

    @tf.function(input_signature=spec)
    def serve(images):
        return model(images, training=False)

    # Frozen first: weights and the constants a layer captured (Normalization's mean and variance) become
    # constants of the graph; left to tf2onnx's from_function they would be extra inputs of the ONNX model.
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    (image_input,), (output,) = frozen.inputs, frozen.outputs
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(),
        input_names=[image_input.name],
        output_names=[output.name],
        tensors_to_rename={image_input.name: "images", output.name: "probabilities"},
        opset=opset,
        custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])},
    )
    return proto.SerializeToString()


def _erfc_as_one_minus_erf(ctx, node, name, args):
    """tf2onnx has no Erfc, which TensorFlow's exact GELU (airbench's) is made of; ONNX has Erf: erfc = 1 - erf."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, dtype=dtype))
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])
    node.type = "Sub"


def convert_tflite(
    saved_model_dir: Path, kind: str, facts: ModelFacts, calibration_images: np.ndarray | None = None
) -> bytes:
    """A TFLite flatbuffer of the SavedModel's default signature, quantised as `kind` says, carrying `facts` as its
    TFLite metadata with the labels packed in (`tflite_metadata.add_metadata`): MediaPipe and LiteRT's task
    libraries then load it as it is. Labels that do not fit the model are a MetadataError.

    Full-integer quantisation calibrates activation ranges on `calibration_images` (training images, never test
    images) and takes uint8 pixels: the calibrated input range is exactly 0–255, so a phone feeds the camera's
    bytes unchanged. Its output stays float32 probabilities.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[IMAGE_SIGNATURE])
    if kind == "tflite-float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif kind == "tflite-dynamic-int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif kind == "tflite-int8":
        if calibration_images is None or not len(calibration_images):
            raise ExportError("full-integer quantisation needs calibration images")

        def representative():
            for image in calibration_images:
                yield [image[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    elif kind != "tflite-float32":
        raise ExportError(f"unknown TFLite format {kind!r}")
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # noqa: BLE001 - the converter raises many types; all mean this format failed
        raise ExportError(f"TFLite conversion to {kind} failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    return add_metadata(flatbuffer, facts)
