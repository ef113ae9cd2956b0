"""The suite's own fixtures (tests/conftest.py): without the real Fashion-MNIST a slow test fails, with a message
saying how to get it, rather than skipping (so `make test-slow` cannot pass having run nothing), while a
default-suite test that needs the data skips."""

from pathlib import Path

import pytest
from conftest import real_fashion_mnist
from helpers import write_fmnist

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")


def test_the_first_place_holding_both_splits_is_used(tmp_path):
    write_fmnist(tmp_path / "only-train", "train", n=2)  # no test split: not enough
    for split in ("train", "test"):
        write_fmnist(tmp_path / "both", split, n=2)
        write_fmnist(tmp_path / "later", split, n=2)
    places = [tmp_path / "missing", tmp_path / "only-train", tmp_path / "both", tmp_path / "later"]
    assert real_fashion_mnist(places, slow=True) == tmp_path / "both"
    assert real_fashion_mnist(places, slow=False) == tmp_path / "both"


def test_missing_data_fails_a_slow_test_and_skips_another(tmp_path):
    places = [tmp_path / "nowhere"]
    with pytest.raises(pytest.fail.Exception) as failed:
        real_fashion_mnist(places, slow=True)
    assert "apt-get install dataset-fashion-mnist" in str(failed.value) and str(tmp_path / "nowhere") in str(
        failed.value) and "the slow tests need the real data" in str(failed.value)
    with pytest.raises(pytest.skip.Exception) as skipped:
        real_fashion_mnist(places, slow=False)
    assert "apt-get install dataset-fashion-mnist" in str(skipped.value)


def test_the_fixture_reads_the_slow_marker(pytester, tmp_path):
    """A run that selects the slow tests fails them when the data is nowhere; the others still skip."""
    pytester.makeconftest(f"""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("suite_conftest", {str(CONFTEST)!r})
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)
suite.REAL_DATA_DIRS[:] = [Path({str(tmp_path / "nowhere")!r})]
fmnist_dir = suite.fmnist_dir
""")
    pytester.makeini("[pytest]\nmarkers =\n    slow: minutes\n")
    pytester.makepyfile(test_data="""
import pytest

@pytest.mark.slow
def test_slow(fmnist_dir):
    pass

def test_default(fmnist_dir):
    pass
""")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-m", "slow or not slow", "-rEs")
    result.assert_outcomes(errors=1, skipped=1)  # pytest.fail in a fixture: an error at set-up, exit status 1
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*ERROR at setup of test_slow*",
                                 "Fashion-MNIST not found*apt-get install dataset-fashion-mnist*the slow tests need*",
                                 "SKIPPED*test_data.py:*apt-get install dataset-fashion-mnist*"])
