"""Batched augmentation (alexnet.data.augment), the config pipeline and statistics (alexnet.data.pipeline) and
the augmentation grid (alexnet.report.grid): each op against torchvision or its definition, per-sample draws,
seeding, validation errors."""

import io

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from alexnet.base.errors import AlexNetError
from alexnet.data import augment as A
from alexnet.data.pipeline import Stats, build_pipeline, compute_stats, list_ops
from alexnet.report.grid import augment_grid


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rgb_stats():
    # A fixed orthonormal basis (not the identity) so the PCA tests see mixed channels.
    q, _ = torch.linalg.qr(torch.tensor([[2.0, 1, 0], [1, 3, 1], [0, 1, 4]], dtype=torch.float64))
    return Stats((0.5, 0.4, 0.3), (0.25, 0.2, 0.3), (0.04, 0.01, 0.002), tuple(map(tuple, q.tolist())))


GREY = Stats((0.5,), (0.25,))


# --- flips -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flip,dim", [(A.flip_lr, -1), (A.flip_ud, -2)])
def test_flip_mirrors_exactly_the_masked_samples(flip, dim):
    x = torch.rand(6, 3, 5, 7)
    mask = torch.tensor([True, False, False, True, True, False])
    out = flip(x, mask)
    for b in range(6):
        assert torch.equal(out[b], x[b].flip(dim) if mask[b] else x[b])


def test_hflip_is_seeded_and_respects_p():
    x = torch.rand(64, 1, 4, 4)
    assert torch.equal(A.hflip(x, 0.5, gen(3)), A.hflip(x, 0.5, gen(3)))
    assert not torch.equal(A.hflip(x, 0.5, gen(3)), A.hflip(x, 0.5, gen(4)))
    assert torch.equal(A.hflip(x, 0.0, gen()), x)
    assert torch.equal(A.hflip(x, 1.0, gen()), x.flip(-1))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(A.hflip(x, 0.5, gen()), x, strict=True)]
    assert 16 < sum(flipped) < 48  # Binomial(64, 0.5): about 32


# --- crops -----------------------------------------------------------------------------------------------------

def test_random_crop_outputs_are_windows_of_the_padded_input():
    x = torch.rand(16, 3, 8, 8)
    out = A.random_crop(x, 8, padding=2, generator=gen())
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = []
    for b in range(16):
        found = [(i, j) for i in range(5) for j in range(5) if torch.equal(padded[b, :, i:i + 8, j:j + 8], out[b])]
        assert len(found) == 1
        offsets.append(found[0])
    assert len(set(offsets)) > 4  # per-sample offsets, 25 possible


def test_random_crop_identity_and_plain_crop():
    x = torch.rand(4, 3, 10, 10)
    assert torch.equal(A.random_crop(x, 10, padding=0, generator=gen()), x)
    out = A.random_crop(x, 6, generator=gen())  # the paper's crop: smaller window, no padding
    assert out.shape == (4, 3, 6, 6)
    assert all(any(torch.equal(x[b, :, i:i + 6, j:j + 6], out[b]) for i in range(5) for j in range(5))
               for b in range(4))
    with pytest.raises(AlexNetError, match="random_crop"):
        A.random_crop(x, 11, generator=gen())


def test_crop_at_takes_the_given_windows():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5)
    out = A.crop_at(x, torch.tensor([0, 2]), torch.tensor([1, 3]), 2)
    assert torch.equal(out[0], x[0, :, 0:2, 1:3]) and torch.equal(out[1], x[1, :, 2:4, 3:5])


def test_random_resized_crop_full_box_is_a_plain_resize():
    x = torch.rand(3, 3, 12, 12)
    full = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=gen())
    assert A.random_resized_crop(x, 7, generator=gen()).shape == (3, 3, 7, 7)
    torch.testing.assert_close(A.random_resized_crop(x, 12, **full), x)  # same size: identity
    # Enlarging: roi_align samples exactly where bilinear interpolate(align_corners=False) does.
    torch.testing.assert_close(A.random_resized_crop(x, 30, **full),
                               F.interpolate(x, size=(30, 30), mode="bilinear", align_corners=False))
    # Halving: two samples per output pixel each way, i.e. a 2x2 box filter.
    torch.testing.assert_close(A.random_resized_crop(x, 6, **full), F.avg_pool2d(x, 2))


def test_resized_crop_boxes_follow_torchvision_sampling():
    h, w, n = 40, 60, 2000
    boxes = A.resized_crop_boxes(n, h, w, scale=(0.1, 0.5), ratio=(0.5, 2.0), generator=gen())
    x1, y1, x2, y2 = boxes.unbind(1)
    bw, bh = x2 - x1, y2 - y1
    assert torch.equal(boxes, boxes.round())  # integer pixel boxes, like torchvision's
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= w).all() and (y2 <= h).all()
    # Rounding w and h to pixels moves area and aspect a little beyond their ranges: allow one pixel.
    area = bw * bh / (h * w)
    assert area.min() > 0.1 * 0.8 and area.max() < 0.5 * 1.1
    assert (bw / bh).min() > 0.5 * 0.8 and (bw / bh).max() < 2.0 * 1.2
    assert len(set(map(tuple, boxes.tolist()))) > n * 0.9  # a different box per sample
    assert x1.float().mean() / (w - bw).float().mean() == pytest.approx(0.5, abs=0.05)  # uniform offsets


def test_resized_crop_boxes_fall_back_to_the_centre_like_torchvision():
    # Aspect 2 at full area never fits a square image: torchvision falls back to the centre, cut to ratio 2.
    boxes = A.resized_crop_boxes(5, 20, 20, scale=(1.0, 1.0), ratio=(2.0, 2.0), generator=gen())
    assert boxes.tolist() == [[0, 5, 20, 15]] * 5


def test_center_crop_and_ten_crop_equal_torchvision():
    x = torch.rand(2, 3, 9, 11)
    for size in (5, 6, 9):
        assert torch.equal(A.center_crop(x, size), TF.center_crop(x, [size, size]))
        assert torch.equal(A.ten_crop(x, size), torch.stack(TF.ten_crop(x, [size, size])))
    u8 = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(A.ten_crop(u8, 24), torch.stack(TF.ten_crop(u8, [24, 24])))
    with pytest.raises(AlexNetError):
        A.ten_crop(x, 10)


# --- rotation --------------------------------------------------------------------------------------------------

def test_rotate_zero_is_identity_and_90_is_rot90():
    x = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(A.rotate(x, 0.0, gen()), x)
    torch.testing.assert_close(A.rotate_by(x, torch.full((4,), 90.0)), torch.rot90(x, 1, (-2, -1)))
    torch.testing.assert_close(A.rotate_by(x, torch.full((4,), -90.0)), torch.rot90(x, -1, (-2, -1)))
    # Non-square: the central 8x8 square of a 8x16 image turns onto itself, rigidly (no shear).
    wide = torch.rand(2, 3, 8, 16)
    torch.testing.assert_close(A.rotate_by(wide, torch.full((2,), 90.0))[..., 4:12],
                               torch.rot90(wide[..., 4:12], 1, (-2, -1)))


def test_rotate_matches_torchvision_per_sample():
    x = torch.rand(3, 3, 10, 14)
    angles = torch.tensor([30.0, -12.5, 170.0])
    out = A.rotate_by(x, angles)
    for b in range(3):
        ref = TF.rotate(x[b], angles[b].item(), interpolation=TF.InterpolationMode.BILINEAR)
        torch.testing.assert_close(out[b], ref, atol=1e-5, rtol=0)


# --- colour ----------------------------------------------------------------------------------------------------

def test_brightness_scales_each_sample_by_one_factor_in_range():
    x = torch.rand(32, 3, 6, 6) * 0.5 + 0.1  # at most 0.6 * 1.5 < 1: no clamping
    out = A.color_jitter(x, brightness=0.5, generator=gen())
    factors = (out / x).flatten(1)
    torch.testing.assert_close(factors, factors[:, :1].expand_as(factors))
    f = factors[:, 0]
    assert f.min() >= 0.5 and f.max() <= 1.5 and f.std() > 0.1


@pytest.mark.parametrize("channels", [3, 1])
def test_adjust_ops_equal_torchvision(channels):
    x = torch.rand(4, channels, 7, 5)
    factors = torch.tensor([0.0, 0.6, 1.3, 3.0])  # 3.0 clamps
    for ours, theirs in ((A.adjust_brightness, TF.adjust_brightness), (A.adjust_contrast, TF.adjust_contrast),
                         (A.adjust_saturation, TF.adjust_saturation)):
        out = ours(x, factors)
        for b in range(4):
            torch.testing.assert_close(out[b], theirs(x[b], factors[b].item()))


def test_contrast_and_saturation_jitter_equal_torchvision_for_the_drawn_factor():
    x = 0.5 + 0.2 * (torch.rand(16, 3, 6, 6) - 0.5)  # in [0.4, 0.6]: factors up to 1.5 never clamp
    out = A.color_jitter(x, contrast=0.5, generator=gen())
    gray_mean = A.grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    # out - m = f (x - m) with m the mean grey, which contrast leaves unchanged: recover f per sample.
    f = ((out - gray_mean).flatten(1).norm(dim=1) / (x - gray_mean).flatten(1).norm(dim=1))
    assert f.min() >= 0.5 - 1e-5 and f.max() <= 1.5 + 1e-5 and f.std() > 0.1
    for b in range(16):
        torch.testing.assert_close(out[b], TF.adjust_contrast(x[b], f[b].item()))

    out = A.color_jitter(x, saturation=0.5, generator=gen())
    gray = A.grayscale(x)  # saturation leaves each pixel's grey unchanged
    f = (out - gray).flatten(1).norm(dim=1) / (x - gray).flatten(1).norm(dim=1)
    assert f.min() >= 0.5 - 1e-5 and f.max() <= 1.5 + 1e-5 and f.std() > 0.1
    for b in range(16):
        torch.testing.assert_close(out[b], TF.adjust_saturation(x[b], f[b].item()))


def test_color_temperature_warms_red_and_cools_blue_by_one_t():
    x = torch.rand(32, 3, 4, 4) * 0.5 + 0.1
    out = A.color_temperature(x, 0.3, gen())
    ratio = (out / x).flatten(2)  # (B, 3, pixels)
    t = ratio[:, 0, 0] - 1
    torch.testing.assert_close(ratio[:, 0], (1 + t)[:, None].expand(-1, 16))
    torch.testing.assert_close(ratio[:, 1], torch.ones(32, 16))
    torch.testing.assert_close(ratio[:, 2], (1 - t)[:, None].expand(-1, 16))
    assert t.abs().max() <= 0.3 + 1e-6 and t.std() > 0.05
    grey = torch.rand(2, 1, 4, 4)
    assert torch.equal(A.color_temperature(grey, 0.3, gen()), grey)


def test_pca_lighting_adds_one_shift_along_the_eigenvectors():
    stats = rgb_stats()
    x = torch.rand(8, 3, 5, 5)
    out = A.pca_lighting(x, stats.eigval, stats.eigvec, 0.1, gen())
    shift = (out - x).flatten(2)  # (B, 3, pixels)
    torch.testing.assert_close(shift, shift[..., :1].expand_as(shift))  # constant over pixels
    # Only the first eigenvalue non-zero: every shift is parallel to the first eigenvector.
    v1 = torch.tensor(stats.eigvec)[:, 0].float()
    out = A.pca_lighting(x, (0.04, 0.0, 0.0), stats.eigvec, 0.1, gen())
    s = (out - x)[:, :, 0, 0]
    torch.testing.assert_close(s, (s @ v1)[:, None] * v1[None], atol=1e-7, rtol=0)
    assert torch.equal(A.pca_lighting(x, stats.eigval, stats.eigvec, 0.0, gen()), x)


def test_pca_lighting_coefficients_are_zero_mean_with_the_given_std():
    stats = rgb_stats()
    x = torch.full((20000, 3, 1, 1), 0.5)
    shift = (A.pca_lighting(x, stats.eigval, stats.eigvec, 0.1, gen()) - x).flatten(1).double()
    alpha = shift @ torch.tensor(stats.eigvec, dtype=torch.float64) / torch.tensor(stats.eigval)  # (B, 3)
    assert alpha.mean(0).abs().max() < 4 * 0.1 / 20000 ** 0.5
    torch.testing.assert_close(alpha.std(0), torch.full((3,), 0.1, dtype=torch.float64), atol=3e-3, rtol=0)


def test_gaussian_noise_has_the_requested_std():
    x = torch.full((4, 3, 64, 64), 0.5)
    diff = A.gaussian_noise(x, 0.05, gen()) - x
    assert diff.std().item() == pytest.approx(0.05, rel=0.03)
    assert abs(diff.mean().item()) < 0.002
    clamped = A.gaussian_noise(torch.zeros(2, 1, 8, 8), 0.5, gen())
    assert clamped.min() >= 0 and clamped.max() <= 1


# --- random erasing --------------------------------------------------------------------------------------------

def test_random_erasing_sets_one_box_per_sample_as_torchvision_erase():
    """Every sample's change is one box of `value` in all channels, the box `erasing_boxes` drew for it (the
    generator replayed), and equal to torchvision's erase(i, j, h, w, value) there."""
    x = torch.rand(64, 3, 28, 28) * 0.9 + 0.05  # no pixel is 0 or 1 already
    out = A.random_erasing(x, p=0.5, value=0.0, generator=gen(3))
    g = gen(3)
    apply = torch.rand(64, generator=g) < 0.5
    top, left, height, width, found = A.erasing_boxes(64, 28, 28, generator=g)
    erased = 0
    for b in range(64):
        if apply[b] and found[b]:
            i, j, h, w = (int(t[b]) for t in (top, left, height, width))
            assert torch.equal(out[b], TF.erase(x[b], i, j, h, w, torch.tensor(0.0)))
            erased += h * w > 0
        else:
            assert torch.equal(out[b], x[b])
    assert 20 <= erased <= 44  # about half of 64
    assert torch.equal(A.random_erasing(x, p=0.0, generator=gen()), x)
    ones = A.random_erasing(x, p=1.0, value=1.0, generator=gen())
    assert ((ones == 1.0).flatten(1).any(1)).all()  # p = 1: every sample, in [0, 1] pixel units


def test_erasing_boxes_follow_torchvision_sampling():
    """The boxes' sizes against torchvision's own RandomErasing.get_params drawn as often: the same distribution
    (mean height, width and area within a few standard errors), strictly inside, at uniform offsets."""
    from torchvision.transforms import RandomErasing

    n, h, w = 4000, 28, 28
    top, left, height, width, found = A.erasing_boxes(n, h, w, generator=gen())
    assert found.all() and (height < h).all() and (width < w).all()
    assert (top >= 0).all() and (top + height <= h).all() and (left >= 0).all() and (left + width <= w).all()
    torch.manual_seed(0)
    theirs = torch.tensor([RandomErasing.get_params(torch.zeros(1, h, w), scale=(0.02, 0.33), ratio=(0.3, 3.3),
                                                    value=[0.0])[2:4] for _ in range(n)], dtype=torch.float64)
    ours = torch.stack([height, width], 1).double()
    for a, b in ((ours, theirs), (ours.prod(1, keepdim=True), theirs.prod(1, keepdim=True))):
        stderr = (a.var(0) / n + b.var(0) / n).sqrt()
        assert ((a.mean(0) - b.mean(0)).abs() < 4 * stderr).all(), (a.mean(0), b.mean(0))
    assert top.double().mean() / (h - height).double().mean() == pytest.approx(0.5, abs=0.05)
    # a box that can never fit (every draw at full area) is no box: the image is left alone, as torchvision's
    _, _, _, _, none = A.erasing_boxes(8, 10, 10, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=gen())
    assert not none.any()
    x = torch.rand(8, 1, 10, 10)
    assert torch.equal(A.random_erasing(x, p=1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=gen()), x)


# --- pipeline --------------------------------------------------------------------------------------------------

SEVERAL = [{"op": "random_crop", "padding": 2}, {"op": "hflip"}, {"op": "rotate", "degrees": 10},
           {"op": "color_jitter", "brightness": 0.3, "contrast": 0.3, "saturation": 0.3},
           {"op": "pca_lighting"}, {"op": "gaussian_noise", "std": 0.02}]


def test_pipeline_is_seeded():
    pipe = build_pipeline(SEVERAL, input_size=16, stats=rgb_stats())
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    out = pipe(images, gen(1))
    assert out.dtype == torch.float32 and out.shape == (8, 3, 16, 16)
    assert torch.equal(out, pipe(images, gen(1)))
    assert not torch.allclose(out, pipe(images, gen(2)))
    with pytest.raises(ValueError, match="Generator"):
        pipe(images)


RANDOM_SPECS = [{"op": "random_crop", "padding": 3}, {"op": "random_resized_crop"}, {"op": "hflip"},
                {"op": "vflip"}, {"op": "rotate"}, {"op": "color_jitter", "brightness": 0.4},
                {"op": "color_jitter", "contrast": 0.4}, {"op": "color_jitter", "saturation": 0.4},
                {"op": "color_temperature"}, {"op": "pca_lighting"}, {"op": "gaussian_noise"},
                {"op": "random_erasing", "p": 1.0}]


@pytest.mark.parametrize("spec", RANDOM_SPECS, ids=lambda s: "-".join(map(str, s.values())))
def test_each_random_op_draws_per_sample(spec):
    image = torch.randint(0, 256, (1, 3, 12, 12), dtype=torch.uint8)
    out = build_pipeline([spec], input_size=12, stats=rgb_stats())(image.expand(16, -1, -1, -1), gen())
    distinct = len({tuple(o.flatten().tolist()) for o in out})
    # A flip has two outcomes; a crop offset 49 (several samples may share one); the rest are continuous.
    expected = {"hflip": 2, "vflip": 2, "random_crop": 5, "random_erasing": 12}.get(spec["op"], 16)
    assert distinct >= expected


def test_no_ops_resizes_like_d2l_and_normalises():
    stats = Stats((0.0,), (1.0,))
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    out = build_pipeline([], input_size=224, stats=stats)(images)
    ref = F.interpolate(images.float() / 255, size=(224, 224), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(A.resize(torch.rand(1, 3, 64, 64), 32).shape, (1, 3, 32, 32))
    big = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(A.resize(big, 32), F.interpolate(big, size=(32, 32), mode="bilinear",
                                                                align_corners=False, antialias=True))
    const = torch.full((3, 3, 10, 10), 200, dtype=torch.uint8)
    stats = rgb_stats()
    out = build_pipeline([{"op": "center_crop", "size": 8}], input_size=8, stats=stats)(const)
    want = (200 / 255 - torch.tensor(stats.mean)) / torch.tensor(stats.std)
    torch.testing.assert_close(out, want.view(1, 3, 1, 1).expand(3, 3, 8, 8).float())


def test_every_op_builds_with_its_defaults():
    images = torch.randint(0, 256, (4, 3, 20, 20), dtype=torch.uint8)
    assert list_ops() == sorted(["random_crop", "random_resized_crop", "hflip", "vflip", "rotate", "color_jitter",
                                 "color_temperature", "pca_lighting", "gaussian_noise", "random_erasing", "resize",
                                 "center_crop"])
    for name in list_ops():
        pipe = build_pipeline([{"op": name}], input_size=16, stats=rgb_stats())
        assert pipe(images, gen()).shape == (4, 3, 16, 16), name
    assert build_pipeline([{"op": "hflip"}], input_size=16, stats=GREY).steps == [("hflip", {"p": 0.5})]


@pytest.mark.parametrize("spec,stats,message", [
    ({"op": "blur"}, GREY, "unknown augmentation op 'blur'"),
    ({"op": "hflip", "q": 0.5}, GREY, "'hflip'.*unknown parameter 'q'"),
    ({"op": "hflip", "p": "0.5"}, GREY, "'hflip'.*'p' must be a number"),
    ({"op": "hflip", "p": True}, GREY, "'hflip'.*'p' must be a number"),
    ({"op": "hflip", "p": 1.5}, GREY, r"'hflip'.*'p' must be in \[0, 1\]"),
    ({"op": "gaussian_noise", "std": -0.1}, GREY, "'gaussian_noise'.*'std' must be >= 0"),
    ({"op": "random_crop", "padding": 1.5}, GREY, "'random_crop'.*'padding' must be an integer"),
    ({"op": "random_resized_crop", "scale": [0.9, 0.1]}, GREY, "'random_resized_crop'.*'scale'"),
    ({"op": "random_resized_crop", "ratio": [1.0]}, GREY, "'random_resized_crop'.*'ratio' must be a pair"),
    ({"op": "pca_lighting"}, GREY, "'pca_lighting'.*RGB"),
    ({"op": "random_erasing", "value": 2}, GREY, r"'random_erasing'.*'value' must be in \[0, 1\]"),
    ({"op": "random_erasing", "scale": [0.0, 0.3]}, GREY, "'random_erasing'.*'scale'"),
    ({"padding": 2}, GREY, "must be a table with an 'op'"),
])
def test_build_pipeline_rejects_bad_specs_in_one_line(spec, stats, message):
    with pytest.raises(AlexNetError, match=message) as err:
        build_pipeline([{"op": "hflip"}, spec], input_size=16, stats=stats)
    assert "\n" not in str(err.value)


def test_crop_too_large_for_the_images_is_caught_when_they_arrive():
    pipe = build_pipeline([{"op": "center_crop", "size": 32}], input_size=32, stats=GREY)
    with pytest.raises(AlexNetError, match="center_crop"):
        pipe(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(AlexNetError, match="channel"):
        build_pipeline([], input_size=8, stats=GREY)(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# --- statistics ------------------------------------------------------------------------------------------------

def test_compute_stats_equal_torch():
    images = torch.randint(0, 256, (50, 3, 6, 7), dtype=torch.uint8)
    images[:, 1] = (images[:, 0] // 2 + images[:, 1] // 2)  # correlated channels, like real photos
    stats = compute_stats(images)
    pixels = images.double().div(255).transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(torch.tensor(stats.mean, dtype=torch.float64), pixels.mean(1))
    torch.testing.assert_close(torch.tensor(stats.std, dtype=torch.float64), pixels.std(1))
    val, vec = torch.tensor(stats.eigval, dtype=torch.float64), torch.tensor(stats.eigvec, dtype=torch.float64)
    torch.testing.assert_close(vec.T @ vec, torch.eye(3, dtype=torch.float64))  # orthonormal columns
    assert val[0] >= val[1] >= val[2] >= 0  # descending
    torch.testing.assert_close(vec @ torch.diag(val) @ vec.T, torch.cov(pixels))  # it is the covariance's PCA
    # the paper's mean image: the per-pixel mean over the training images, 0-255 scale
    torch.testing.assert_close(stats.mean_image, images.double().mean(0).float())
    buffer = io.BytesIO()  # what a checkpoint holds, loaded as checkpoints are (weights_only)
    torch.save(stats.to_dict(), buffer)
    buffer.seek(0)
    back = Stats.from_dict(torch.load(buffer, weights_only=True))
    assert back == stats and torch.equal(back.mean_image, stats.mean_image)


def test_compute_stats_grey_and_subset():
    images = torch.randint(0, 256, (40, 1, 5, 5), dtype=torch.uint8)
    stats = compute_stats(images)
    assert stats.eigval is None and stats.eigvec is None and len(stats.mean) == 1
    assert Stats.from_dict(stats.to_dict()) == stats
    sub = compute_stats(images, max_images=10, seed=1)
    assert sub == compute_stats(images, max_images=10, seed=1) != stats
    assert sub != compute_stats(images, max_images=10, seed=2)
    with pytest.raises(AlexNetError):
        Stats.from_dict({"mean": [0.5]})


# --- grid ------------------------------------------------------------------------------------------------------

def test_augment_grid_writes_a_png(tmp_path):
    images = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    labels = torch.arange(20) % 10
    pipe = build_pipeline([{"op": "random_crop", "padding": 2}, {"op": "hflip"}], input_size=28, stats=GREY)
    out = augment_grid(images, pipe, tmp_path / "figs" / "augment.png", samples=4, variants=3,
                       classes=[f"class {i}" for i in range(10)], labels=labels)
    assert out == tmp_path / "figs" / "augment.png"
    png = matplotlib.image.imread(out)
    # 4 rows x 4 columns of 1.4-inch cells at 100 dpi.
    assert png.shape[2] in (3, 4) and abs(png.shape[0] - 560) <= 4 and abs(png.shape[1] - 560) <= 4
    assert png[..., :3].std() > 0.05  # the images are drawn, not a blank canvas
    assert [p.name for p in out.parent.iterdir()] == ["augment.png"]  # the temp file is gone
