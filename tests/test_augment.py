"""The batched augmentation against keras-preprocessing on the same parameters, real images."""
import numpy as np
import pytest
import torch
from keras_preprocessing.image import ImageDataGenerator, apply_affine_transform

from aprelu_exp.data.augment import AffineParams, KerasAugmentConfig, apply_affine, sample_params

ARTICLE_GENERATOR = dict(rotation_range=30, zoom_range=0.2, shear_range=30, horizontal_flip=True,
                         width_shift_range=0.125, height_shift_range=0.125)


def _keras(img_hwc, p, i):
    out = apply_affine_transform(
        img_hwc, theta=p.theta[i].item(), tx=p.tx[i].item(), ty=p.ty[i].item(),
        shear=p.shear[i].item(), zx=p.zx[i].item(), zy=p.zy[i].item(),
        row_axis=0, col_axis=1, channel_axis=2, fill_mode="nearest", order=1)
    return out[:, ::-1] if p.flip[i] else out


def test_matches_keras_preprocessing_on_real_images(cifar):
    images = cifar.train_images[:48].astype(np.float32) / 255.0 - 0.47
    p = sample_params(KerasAugmentConfig(), 48, 32, 32, torch.Generator().manual_seed(1))
    ours = apply_affine(torch.from_numpy(images), p).numpy()
    for i in range(48):
        ref = _keras(images[i].transpose(1, 2, 0), p, i).transpose(2, 0, 1)
        # float32 resampling of the same bilinear/nearest-fill warp: equal to rounding, borders too.
        np.testing.assert_allclose(ours[i], ref, atol=1e-4)
    assert p.flip.any() and (~p.flip).any()


@pytest.mark.parametrize("single", [
    dict(theta=25.0), dict(tx=3.5), dict(ty=-2.25), dict(shear=-20.0), dict(zx=0.85, zy=1.15)])
def test_each_transform_alone(cifar, single):
    img = cifar.test_images[7:8].astype(np.float32)
    fields = dict(theta=0.0, tx=0.0, ty=0.0, shear=0.0, zx=1.0, zy=1.0)
    fields.update(single)
    p = AffineParams(**{k: torch.tensor([v], dtype=torch.float64) for k, v in fields.items()},
                     flip=torch.tensor([False]))
    ours = apply_affine(torch.from_numpy(img), p).numpy()[0]
    ref = _keras(img[0].transpose(1, 2, 0), p, 0).transpose(2, 0, 1)
    np.testing.assert_allclose(ours, ref, atol=2e-3)  # 0-255 scale


def test_parameter_ranges_follow_image_data_generator():
    gen = ImageDataGenerator(**ARTICLE_GENERATOR)
    np.random.seed(0)
    keras_draws = [gen.get_random_transform((32, 32, 3)) for _ in range(4000)]
    p = sample_params(KerasAugmentConfig(), 4000, 32, 32, torch.Generator().manual_seed(0))
    for key in ("theta", "tx", "ty", "shear", "zx", "zy"):
        k = np.array([d[key] for d in keras_draws])
        ours = getattr(p, key).numpy()
        assert ours.min() >= k.min() - 0.05 * abs(k.min()) - 1e-9
        assert ours.max() <= k.max() + 0.05 * abs(k.max()) + 1e-9
        assert abs(ours.mean() - k.mean()) < 0.05 * (k.max() - k.min())
        assert abs(ours.std() - k.std()) < 0.05 * k.std()
    # zx and zy are drawn independently, as Keras does.
    assert abs(np.corrcoef(p.zx.numpy(), p.zy.numpy())[0, 1]) < 0.05
    assert abs(p.flip.float().mean().item() - np.mean([d["flip_horizontal"] for d in keras_draws])) < 0.05
