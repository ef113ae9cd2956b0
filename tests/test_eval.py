"""eval / predict / export on a tiny trained run: exact counts, probabilities, ONNX equal to PyTorch."""

import json

import numpy as np
import pytest
import torch
import torchvision
from synthetic import patterned, write_fashion_mnist

from alexnet.cli.evaluate import confusion_lines
from alexnet.config import apply_overrides, load_preset
from alexnet.data.pipeline import Stats, build_pipeline
from alexnet.eval.checkpoint import eval_precision, predict
from alexnet.run.trained import load_trained
from alexnet.runtime.precision import PRECISIONS
from alexnet.training.run import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_fashion_mnist(root / "data")
    cfg = apply_overrides(load_preset("quick"), {"data.data_dir": str(data), "model.width": 8, "model.hidden": 32,
                                                  "train.batch_size": 32, "train.epochs": 2})
    train(cfg, root / "run", quiet=True)
    return root


def test_eval_json_and_confusion(run, cli):
    code, out, err = cli("eval", "--checkpoint", run / "run" / "best.pt", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["count"] == 200
    confusion = np.array(result["confusion"])
    assert confusion.sum() == 200 and (confusion.sum(1) == 20).all()  # 20 test images per class
    assert result["top1"] == pytest.approx(np.trace(confusion) / 200)
    assert result["per_class"] == pytest.approx((np.diag(confusion) / 20).tolist())
    assert 0 <= result["top1"] <= result["top5"] <= 1
    assert (run / "run" / "confusion.png").stat().st_size > 1000
    # what it ran at, resolved on this device: --precision auto by default
    assert result["precision"] in PRECISIONS and result["precision"] != "auto"
    assert result["precision_reason"].startswith("auto: ") and isinstance(result["channels_last"], bool)


def test_eval_text_says_its_precision_and_heads_the_confusion_columns(run, cli):
    code, out, err = cli("eval", "--checkpoint", run / "run" / "best.pt", "--precision", "fp32", "--device", "cpu")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"{run / 'run' / 'best.pt'}: 200 test images (centre) on cpu, precision fp32 + channels_last " \
                       "(asked for)"
    head = lines.index("confusion matrix (rows: true, columns: predicted):") + 1
    assert lines[head].split() == ["T-shi", "Trous", "Pullo", "Dress", "Coat", "Sanda", "Shirt", "Sneak", "Bag",
                                   "Ankle"]
    assert lines[head + 1].split()[0] == "T-shirt/top" and len(lines[head + 1].split()) == 11
    code, out, _ = cli("eval", "--checkpoint", run / "run" / "best.pt", "--precision", "fp32", "--json")
    record = json.loads(out)  # on the default device: on CUDA the reason adds "IEEE fp32 (TF32 off)"
    assert code == 0 and record["precision"] == "fp32" and record["precision_reason"].startswith("asked for")


def test_confusion_columns_are_headed_by_the_class_names_that_fit():
    lines = confusion_lines([[3, 1], [0, 12345]], ["cat", "T-shirt/top"])
    assert lines == ["             " + "   cat" + " T-shi",
                     "  cat        " + "     3" + "     1",
                     "  T-shirt/top" + "     0" + " 12345"]
    wide = confusion_lines([[1234567, 0], [0, 1]], ["a", "b"])  # counts wider than a name: the column widens
    assert wide == ["   " + "       a" + "       b", "  a" + " 1234567" + "       0", "  b" + "       0" + "       1"]


def test_ten_crop_is_refused_for_a_net_trained_on_whole_images(run, cli):
    code, out, err = cli("eval", "--checkpoint", run / "run" / "best.pt", "--ten-crop", "--json")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "trained on whole 28x28 images" in err


def test_ten_crop_eval_of_a_net_trained_on_crops_counts_each_image_once(run, cli):
    cfg = apply_overrides(load_preset("quick"), {
        "data.data_dir": str(run / "data"), "model.width": 8, "model.hidden": 32, "train.batch_size": 32,
        "train.epochs": 1, "data.input_size": 24, "data.train_augment": [{"op": "random_crop", "size": 24}],
        "data.eval_augment": [{"op": "center_crop", "size": 24}]})
    train(cfg, run / "crops", quiet=True)
    code, out, err = cli("eval", "--checkpoint", run / "crops" / "best.pt", "--ten-crop", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["count"] == 200 and result["ten_crop"] is True
    assert np.array(result["confusion"]).sum() == 200


def test_ten_views_are_the_papers_crops_of_the_full_image():
    """Section 4.1: the four corner patches and the centre patch of the crop size, and their reflections."""
    images = torch.arange(2 * 36, dtype=torch.uint8).view(2, 1, 6, 6)
    stats = Stats(mean=(0.5,), std=(0.25,))
    views = build_pipeline([], input_size=4, stats=stats).ten_views(images, 4)
    x = (images.float() / 255 - 0.5) / 0.25

    def five(v):  # top-left, top-right, bottom-left, bottom-right, centre (torchvision's order)
        return [v[..., :4, :4], v[..., :4, 2:], v[..., 2:, :4], v[..., 2:, 2:], v[..., 1:5, 1:5]]
    expected = torch.stack(five(x) + five(x.flip(-1)))
    assert views.shape == (10, 2, 1, 4, 4)
    torch.testing.assert_close(views, expected, rtol=0, atol=1e-6)
    # resized to the input size when the crop differs from it, as the training pipeline does
    assert build_pipeline([], input_size=8, stats=stats).ten_views(images, 4).shape == (10, 2, 1, 8, 8)


def test_predict_top_k(run, cli, tmp_path):
    images, labels = patterned(3, seed=7)
    paths = []
    for i, image in enumerate(images):
        path = tmp_path / f"img{i}.png"
        torchvision.io.write_png(torch.from_numpy(image)[None].expand(3, -1, -1).contiguous(), str(path))
        paths.append(path)
    code, out, err = cli("predict", "--checkpoint", run / "run" / "best.pt", *paths, "--topk", "3", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["precision"] in PRECISIONS and record["precision_reason"].startswith("auto: ")
    assert record["failed"] == []
    result = record["predictions"]
    assert [r["image"] for r in result] == [str(p) for p in paths]
    for r in result:
        probs = [t["prob"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    trained = load_trained(run / "run" / "best.pt")
    assert all(r["top"][0]["class"] in trained.classes for r in result)


def test_predict_a_folder_is_its_images_in_order_and_batches_change_nothing(run, cli, tmp_path):
    images, _ = patterned(5, seed=3)
    (tmp_path / "photos" / "more").mkdir(parents=True)
    names = ["photos/b.png", "photos/a.png", "photos/more/c.png", "photos/more/d.PNG", "photos/e.png"]
    for name, image in zip(names, images, strict=True):
        torchvision.io.write_png(torch.from_numpy(image)[None].expand(3, -1, -1).contiguous(), str(tmp_path / name))
    (tmp_path / "photos" / "notes.txt").write_text("not an image: skipped in a folder")
    (tmp_path / "photos" / "._a.png").write_bytes(b"macOS metadata, not an image: hidden files are skipped")
    code, out, err = cli("predict", "--checkpoint", run / "run" / "best.pt", tmp_path / "photos", "--json")
    assert code == 0, err
    expected = sorted(tmp_path / n for n in names)
    assert [r["image"] for r in json.loads(out)["predictions"]] == [str(p) for p in expected]
    trained = load_trained(run / "run" / "best.pt")
    whole, split = predict(trained, expected), predict(trained, expected, batch_size=2)
    assert [[c for c, _ in r] for r in whole] == [[c for c, _ in r] for r in split]
    # Not equal bit for bit: batches of 5 and of 2 take different kernels (oneDNN and MKL pick them by shape and
    # CPU; cuDNN on CUDA by batch size): up to 2.4e-7 (1.4e-6 of a probability) with AVX2 kernels, 7e-8 with AMX,
    # 4% of this tolerance at most. Two different images' probabilities differ by 0.15 or more, and the ranks
    # within an image by 2.5% or more, so a mix-up of images cannot pass and the classes compare exactly above.
    torch.testing.assert_close([[v for _, v in r] for r in whole], [[v for _, v in r] for r in split],
                               rtol=1e-5, atol=1e-6)
    (tmp_path / "empty").mkdir()
    code, out, err = cli("predict", "--checkpoint", run / "run" / "best.pt", tmp_path / "empty")
    assert code == 2 and "holds no images" in err and err.count("\n") == 1, err


def test_predict_bad_files_are_one_line_errors(run, cli, tmp_path):
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    for path, words in ((tmp_path / "missing.png", "no such file"), (fake, "cannot decode")):
        code, out, err = cli("predict", "--checkpoint", run / "run" / "best.pt", path)
        assert code == 2 and words in err and err.count("\n") == 1, err
        assert out.startswith(f"{run / 'run' / 'best.pt'} on ") and " precision " in out and out.count("\n") == 1


def test_predict_goes_on_past_bad_files_and_fails_at_the_end(run, cli, tmp_path):
    """`alexnet predict notes.png shoe.png ...`: every good image is predicted, in order, at the precision asked
    for; each bad one is a line on stderr; the exit code says that something failed."""
    images, _ = patterned(3, seed=5)
    good = [tmp_path / f"good{i}.png" for i in range(3)]
    for path, image in zip(good, images, strict=True):
        torchvision.io.write_png(torch.from_numpy(image)[None].expand(3, -1, -1).contiguous(), str(path))
    notes, missing = tmp_path / "notes.png", tmp_path / "missing.png"
    notes.write_text("a note, not an image")
    argv = ["predict", "--checkpoint", run / "run" / "best.pt", "--precision", "fp32", "--topk", "2", "--device", "cpu",
            notes, good[0], missing, good[1], good[2]]
    code, out, err = cli(*argv)
    assert code == 2
    first, second = err.splitlines()  # one line per bad file, in order
    assert first == f"alexnet predict: error: {notes}: cannot decode image (cannot identify image file)"
    assert second == f"alexnet predict: error: {missing}: no such file"
    lines = out.splitlines()
    assert lines[0] == f"{run / 'run' / 'best.pt'} on cpu, precision fp32 + channels_last (asked for)"
    trained = load_trained(run / "run" / "best.pt", "cpu")
    expected = predict(trained, good, topk=2, precision=eval_precision(trained, "fp32"))
    assert lines[1:] == [f"{p}: " + ", ".join(f"{c} {v:.3f}" for c, v in top)
                         for p, top in zip(good, expected, strict=True)]
    code, out, err = cli(*argv, "--json")
    record = json.loads(out)
    assert code == 2 and err.count("\n") == 2
    assert [r["image"] for r in record["predictions"]] == [str(p) for p in good]
    assert [[t["class"] for t in r["top"]] for r in record["predictions"]] == [[c for c, _ in top] for top in expected]
    assert [f["image"] for f in record["failed"]] == [str(notes), str(missing)]
    assert record["failed"][1]["error"] == f"{missing}: no such file"
    assert (record["precision"], record["precision_reason"]) == ("fp32", "asked for")


def test_export_onnx_matches_pytorch(run, cli, tmp_path):
    import onnxruntime

    out = tmp_path / "model.onnx"
    code, stdout, err = cli("export", "--checkpoint", run / "run" / "best.pt", "--format", "onnx", "--out", out)
    assert code == 0, err
    assert "onnxruntime agrees" in stdout
    trained = load_trained(run / "run" / "best.pt", device="cpu")
    x = torch.randn(5, 1, 28, 28)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, trained.model(x).numpy(), rtol=1e-4, atol=1e-5)
    meta = {p.key: p.value for p in __import__("onnx").load(str(out)).metadata_props}
    assert json.loads(meta["classes"]) == trained.classes


def test_onnx_of_a_mean_image_run_takes_pixels_and_subtracts_the_mean_image_itself(run, cli, tmp_path):
    """The paper's input scaling: the graph carries the mean image, so raw pixels in give the trained net's
    logits on the run's own eval pipeline."""
    import onnx
    import onnxruntime

    cfg = apply_overrides(load_preset("quick"), {
        "data.data_dir": str(run / "data"), "model.width": 8, "model.hidden": 32, "train.batch_size": 32,
        "train.epochs": 1, "data.normalize": "mean_image", "data.train_augment": [], "optim.lr": 1e-4})
    train(cfg, tmp_path / "mi", quiet=True)
    out = tmp_path / "mi.onnx"
    code, _, err = cli("export", "--checkpoint", tmp_path / "mi" / "best.pt", "--format", "onnx", "--out", out)
    assert code == 0, err
    trained = load_trained(tmp_path / "mi" / "best.pt", device="cpu")
    images = torch.from_numpy(patterned(4, seed=11)[0])[:, None]            # uint8 (4, 1, 28, 28)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": images.float().numpy()})[0]
    with torch.no_grad():
        expected = trained.model(trained.pipeline(images)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["normalize"] == "mean_image" and "subtracts the mean image" in meta["input"] and "mean" not in meta


def test_failed_onnx_check_writes_nothing(run, cli, tmp_path, monkeypatch):
    import onnxruntime

    class Wrong:
        def __init__(self, *a, **k):
            pass

        def get_inputs(self):
            return [type("I", (), {"name": "image"})()]

        def run(self, *a, **k):
            return [np.zeros((3, 10), np.float32) + 123]
    monkeypatch.setattr(onnxruntime, "InferenceSession", Wrong)
    out = tmp_path / "model.onnx"
    code, _, err = cli("export", "--checkpoint", run / "run" / "best.pt", "--format", "onnx", "--out", out)
    assert code == 2 and "ONNX check failed" in err
    assert list(tmp_path.iterdir()) == []


def test_export_safetensors_round_trip(run, cli, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "model.safetensors"
    code, _, _ = cli("export", "--checkpoint", run / "run" / "best.pt", "--format", "safetensors", "--out", out)
    assert code == 0
    state = torch.load(run / "run" / "best.pt", weights_only=True)["model"]
    loaded = load_file(str(out))
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_eval_of_a_missing_checkpoint(cli, tmp_path):
    code, _, err = cli("eval", "--checkpoint", tmp_path / "nope.pt")
    assert code == 2 and "no checkpoint at" in err


def test_tally_counts_and_a_class_without_test_images():
    from alexnet.eval.metrics import Tally

    tally = Tally(num_classes=3, device="cpu")
    logits = torch.tensor([[3.0, 1, 0], [0, 2, 1], [2, 1, 0], [0, 1, 2]])
    labels = torch.tensor([0, 1, 1, 0])  # no image of class 2
    tally.update(logits, labels, torch.tensor(1.5))
    result = tally.result()
    assert result.confusion == [[1, 0, 1], [1, 1, 0], [0, 0, 0]]
    assert result.per_class == [0.5, 0.5, None]
    assert (result.count, result.top1, result.loss) == (4, 0.5, 1.5 / 4)
