"""Values, exceptions and arguments to bytes and back."""

import pickle
import threading

import pytest

import jpar
from jpar.runtime.wire import serialization as S
from jpar.errors import SerializationError


def test_task_error_is_also_the_original_type():
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        blob = S.dumps_exception(exc, "f")
    with pytest.raises(ValueError) as info:
        S.load_result(1, blob)
    err = info.value
    assert isinstance(err, jpar.TaskError)
    assert err.args == ("bad value",)
    assert "bad value" in str(err) and "Traceback" in err.remote_traceback
    assert err._render_traceback_()[0].startswith("Traceback")


def test_custom_exception_keeps_attributes():
    class Oops(Exception):
        def __init__(self, code):
            super().__init__(f"code {code}")
            self.code = code

    try:
        raise Oops(42)
    except Oops as exc:
        blob = S.dumps_exception(exc, "g")
    with pytest.raises(Oops) as info:
        S.load_result(1, blob)
    assert info.value.code == 42


def test_unpicklable_exception_becomes_a_stand_in():
    class Holder(Exception):
        def __init__(self):
            super().__init__("holds a lock")
            self.lock = threading.Lock()

    try:
        raise Holder()
    except Holder as exc:
        blob = S.dumps_exception(exc, "h")
    with pytest.raises(jpar.TaskError, match="holds a lock"):
        S.load_result(1, blob)


def test_unpicklable_argument_is_named():
    with pytest.raises(SerializationError, match="keyword argument 'lock'"):
        S.dumps_args("f", (1, 2), {"lock": threading.Lock()})
    with pytest.raises(SerializationError, match="positional argument 1"):
        S.dumps_args("f", (1, threading.Lock()), {})


def test_plain_and_closure_values_round_trip():
    x = 5
    fn = lambda y: x + y  # noqa: E731
    assert pickle.loads(S.dumps(fn))(1) == 6
    assert pickle.loads(S.dumps({"a": [1, 2.5, None]})) == {"a": [1, 2.5, None]}
