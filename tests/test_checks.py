import numpy as np
import pytest

from llmft.checks import check_dropout, check_int


def test_check_int_accepts_numpy_integers_and_returns_int():
    assert check_int("n", np.int64(3)) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_int("i", 0, minimum=0) == 0


@pytest.mark.parametrize("bad", [0, -1, 1.0, "2", True, None])
def test_check_int_names_argument_and_value(bad):
    with pytest.raises(ValueError, match=rf"^n must be an integer >= 1; got {bad!r}$".replace("(", r"\(").replace(")", r"\)")):
        check_int("n", bad)


@pytest.mark.parametrize("bad", [1.0, -0.1, "0.1", True])
def test_check_dropout(bad):
    assert check_dropout(0) == 0.0
    with pytest.raises(ValueError, match="dropout must be a float in"):
        check_dropout(bad)
