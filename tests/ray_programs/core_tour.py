"""A program written against Ray's core API, unchanged except for the import line."""
import time

import jpar as ray

ray.init(num_cpus=2, ignore_reinit_error=True)
assert ray.is_initialized()
assert ray.cluster_resources()["CPU"] == 2


@ray.remote
def f(x):
    return x * x


@ray.remote(num_returns=2)
def split(x):
    return x, -x


@ray.remote(max_retries=0)
def boom():
    raise KeyError("missing")


@ray.remote
def whoami():
    return ray.get_runtime_context().get_task_id()


futures = [f.remote(i) for i in range(4)]
print(ray.get(futures))
a, b = split.remote(3)
assert ray.get([a, b]) == [3, -3]
obj = ray.put({"weights": [1, 2, 3]})
assert ray.get(ray.remote(lambda d: sum(d["weights"])).remote(obj)) == 6
assert ray.get(f.remote(f.remote(2))) == 16

ready, not_ready = ray.wait([f.remote(1), ray.remote(time.sleep).remote(30)], num_returns=1, timeout=10)
assert len(ready) == 1 and len(not_ready) == 1
ray.cancel(not_ready[0])
try:
    ray.get(not_ready[0], timeout=30)
except ray.exceptions.TaskCancelledError:
    pass
else:
    raise AssertionError("get() of a cancelled task returned")

try:
    ray.get(boom.remote())
except ray.exceptions.RayTaskError as e:
    assert isinstance(e, KeyError)
else:
    raise AssertionError("a task's KeyError was not raised by get()")
sleeper = ray.remote(time.sleep).remote(5)
try:
    ray.get(sleeper, timeout=0.1)
except ray.exceptions.GetTimeoutError:
    pass
else:
    raise AssertionError("get(timeout=0.1) of a 5 s task returned")
ray.cancel(sleeper)

assert ray.get(whoami.remote()) is not None and ray.get_runtime_context().get_task_id() is None
assert ray.nodes()[0]["Alive"] and ray.nodes()[0]["Resources"]["CPU"] == 2
assert ray.available_resources()["CPU"] <= 2


@ray.remote
class Counter:
    def __init__(self):
        self.value = 0

    def increment(self):
        self.value += 1
        return self.value


c = Counter.options(name="counter").remote()
assert ray.get([c.increment.remote() for _ in range(3)]) == [1, 2, 3]
assert ray.get(ray.get_actor("counter").increment.remote()) == 4
ray.kill(c)
ray.shutdown()
print("ray program ran unchanged")
