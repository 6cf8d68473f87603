"""Transfer models: backbones without top, the head, extract/finetune, weights, preprocessing."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainables.config import TrialConfig
from trainables.transfer import WeightsUnavailable, check_weights, input_transform, transfer_model

# Keras 3.15 converts variables with np.array(x) inside its own code; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def config(**kw) -> TrialConfig:
    base = dict(model="resnet50", dataset="cub200", input_size=32, weights="none", head_units=8)
    return TrialConfig(**{**base, **kw})


def backbone_of(model: keras.Model) -> keras.Model:
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def batchnorms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.fixture(scope="module")
def resnet_finetune():
    return transfer_model(config(transfer_mode="finetune", dropout=0.25), num_classes=3)


def test_inception_resnet_v2_builds_at_75px_and_outputs_the_classes():
    model = transfer_model(config(model="inception_resnet_v2", input_size=75), num_classes=5)
    assert model.input_shape == (None, 75, 75, 3) and model.output_shape == (None, 5)
    out = model(np.random.default_rng(0).uniform(-1, 1, (2, 75, 75, 3)).astype("float32"))
    np.testing.assert_allclose(out.numpy().sum(axis=1), 1.0, rtol=1e-5)  # softmax


def test_resnet50_head_layout(resnet_finetune):
    assert resnet_finetune.input_shape == (None, 32, 32, 3) and resnet_finetune.output_shape == (None, 3)
    assert backbone_of(resnet_finetune).output_shape == (None, 2048)  # global average pooling, no top
    names = [layer.name for layer in resnet_finetune.layers]
    assert names[-3:] == ["head", "head_dropout", "classes"]
    assert resnet_finetune.get_layer("head").units == 8
    without = transfer_model(config(), num_classes=3)
    assert "head_dropout" not in [layer.name for layer in without.layers]  # dropout 0: no layer


def test_extract_trains_only_the_head():
    model = transfer_model(config(transfer_mode="extract"), num_classes=3)
    head = model.get_layer("head").trainable_weights + model.get_layer("classes").trainable_weights
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in head}
    assert backbone_of(model).trainable_weights == []


def test_finetune_trains_backbone_but_keeps_batchnorm_in_inference_mode(resnet_finetune):
    model = resnet_finetune
    backbone = backbone_of(model)
    conv = backbone.get_layer("conv1_conv")
    assert any(w is conv.kernel for w in model.trainable_weights)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", run_eagerly=True
    )  # eager: tracing ResNet50's train step costs more than the step
    bn = batchnorms(model)
    moving = [(b.moving_mean.numpy().copy(), b.moving_variance.numpy().copy()) for b in bn]
    kernel = conv.kernel.numpy().copy()
    rng = np.random.default_rng(0)
    x = rng.uniform(-100, 100, (4, 32, 32, 3)).astype("float32")
    model.train_on_batch(x, np.array([0, 1, 2, 0]))
    assert not np.allclose(kernel, conv.kernel.numpy())  # the backbone learned
    for b, (mean, var) in zip(bn, moving, strict=True):  # ...but no BatchNorm statistic moved
        np.testing.assert_array_equal(mean, b.moving_mean.numpy())
        np.testing.assert_array_equal(var, b.moving_variance.numpy())


def test_finetune_batchnorm_stays_frozen_after_a_checkpoint_round_trip(resnet_finetune, tmp_path):
    # A resumed trial restores the model with keras.models.load_model; inference mode must survive.
    path = tmp_path / "model.keras"
    resnet_finetune.save(path)
    restored = keras.models.load_model(path)
    assert all(not b.trainable for b in batchnorms(restored))
    assert len(restored.trainable_weights) == len(resnet_finetune.trainable_weights)


@pytest.mark.parametrize("model, size", [("resnet50", 48), ("inception_resnet_v2", 75)])
def test_input_transform_resizes_and_matches_preprocess_input(model, size):
    module = {"resnet50": keras.applications.resnet50, "inception_resnet_v2": keras.applications.inception_resnet_v2}[
        model
    ]
    images = np.random.default_rng(1).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    prepare = input_transform(config(model=model, input_size=size))
    expected = module.preprocess_input(tf.image.resize(images.astype("float32"), (size, size)).numpy())
    eager = prepare(tf.constant(images)).numpy()
    assert eager.shape == (3, size, size, 3) and eager.dtype == np.float32
    np.testing.assert_allclose(eager, expected, rtol=1e-5, atol=1e-4)
    in_pipeline = next(iter(tf.data.Dataset.from_tensors(images).map(prepare))).numpy()
    np.testing.assert_allclose(in_pipeline, expected, rtol=1e-5, atol=1e-4)


def test_input_transform_skips_the_resize_at_the_input_size():
    images = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    out = input_transform(config(input_size=32))(tf.constant(images)).numpy()
    np.testing.assert_allclose(out, keras.applications.resnet50.preprocess_input(images.astype("float32")), atol=1e-4)


def test_weights_path_of_a_saved_backbone_or_full_model_is_loaded(resnet_finetune, tmp_path):
    backbone_file = tmp_path / "backbone.weights.h5"
    backbone_of(resnet_finetune).save_weights(backbone_file)
    from_backbone = transfer_model(config(weights=str(backbone_file)), num_classes=3)
    for a, b in zip(backbone_of(from_backbone).weights, backbone_of(resnet_finetune).weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    full_file = tmp_path / "full.weights.h5"
    resnet_finetune.save_weights(full_file)
    from_full = transfer_model(config(weights=str(full_file), dropout=0.25), num_classes=3)
    np.testing.assert_array_equal(
        from_full.get_layer("classes").kernel.numpy(), resnet_finetune.get_layer("classes").kernel.numpy()
    )
    with pytest.raises(WeightsUnavailable, match="full.weights.h5"):  # a 5-class head cannot take them
        transfer_model(config(weights=str(full_file), dropout=0.25), num_classes=5)


def test_missing_or_unreadable_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere.weights.h5"
    with pytest.raises(WeightsUnavailable, match=f"{missing}.*no such file.*--weights none"):
        check_weights(str(missing))
    with pytest.raises(WeightsUnavailable, match="nowhere.weights.h5"):
        transfer_model(config(weights=str(missing)), num_classes=3)
    text = tmp_path / "notes.h5"
    text.write_text("not weights")
    with pytest.raises(WeightsUnavailable, match="notes.h5.*not a Keras weights file"):
        check_weights(str(text))
    check_weights("none")
    check_weights("imagenet")  # only a trial's node can tell whether the download works


def test_check_weights_does_not_import_tensorflow(tmp_path):
    # run_search validates --weights before starting Ray; that must stay cheap.
    weights = tmp_path / "w.h5"
    weights.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    code = (
        "import sys; from trainables.transfer import check_weights; "
        f"check_weights('none'); check_weights({str(weights)!r}); "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_imagenet_download_failure_is_weights_unavailable(tmp_path):
    # No internet (here, in CI): the download fails; pointing Keras' cache at an empty folder keeps
    # a previously cached file from hiding that. Run in a child so KERAS_HOME is read at import.
    code = (
        "from trainables.config import TrialConfig\n"
        "from trainables.transfer import transfer_model, WeightsUnavailable\n"
        "import keras.src.utils.file_utils as fu\n"
        "try:\n"
        "    transfer_model(TrialConfig(model='resnet50', dataset='cub200', input_size=32,"
        " weights='imagenet'), 3)\n"
        "except WeightsUnavailable as e:\n"
        "    print('UNAVAILABLE', e)\n"
    )
    env = {
        "KERAS_HOME": str(tmp_path / "keras"),
        "PATH": "/usr/bin:/bin",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "UNAVAILABLE" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "--weights none" in out.stdout
