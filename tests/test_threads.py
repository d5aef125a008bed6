"""Thread caps: nested caps restore the outer one, concurrent ones the setting found first."""

import threading

import pytest
import torch

from latent_sculpting.threads import SCORING_THREADS_ENV, limit_threads, scoring_threads


@pytest.fixture(autouse=True)
def three_threads():
    saved = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(saved)


def test_nested_caps_restore_the_outer_one():
    with limit_threads(2):
        assert torch.get_num_threads() == 2
        with limit_threads(1, blas=False):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 3
    with limit_threads(None):
        assert torch.get_num_threads() == 3
    with pytest.raises(ValueError, match="at least 1"), limit_threads(0):
        pass


def test_concurrent_caps_keep_the_cap_until_the_last_one_ends():
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with scoring_threads():
            first_in.set()
            second_in.wait(10)
        first_out.set()

    def second():
        first_in.wait(10)
        with scoring_threads():
            second_in.set()
            first_out.wait(10)
            seen["while the first ended"] = torch.get_num_threads()

    errors = []

    def run(target):
        try:
            target()
        except Exception as error:  # an exception in a thread would otherwise pass unseen
            errors.append(error)

    threads = [threading.Thread(target=run, args=(f,)) for f in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert seen == {"while the first ended": 1}
    assert torch.get_num_threads() == 3


def test_scoring_threads_follow_the_environment(monkeypatch):
    monkeypatch.setenv(SCORING_THREADS_ENV, "2")
    with scoring_threads():
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 3
