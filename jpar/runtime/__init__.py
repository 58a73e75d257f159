"""jpar's own runtime: the native backend's processes and what they share.

Which process runs what::

    driver/   in the user's process (notebook kernel, script): the connection to a head
              (driver.py), starting a local head (launcher.py), actor calls (actors.py),
              task arguments (args.py), what front ends ask of a cluster (frontend.py)
    head/     the head process: the controller (sockets, engine membership, actors) around
              the scheduler, a pure state machine (events in, actions out)
    engine/   each engine process: the task loop (engine.py), actor processes (actor_host.py),
              CPU and memory samples (metrics.py)
    store/    every process: the shared-memory object store, its segments and cross-host transfer
    wire/     every process: typed messages (protocol.py), values to bytes (serialization.py), and
              the only module that imports ZeroMQ (transport.py)

Nothing here imports the public API (``jpar.api``, ``jpar.actor``, ``jpar.remote_function``,
``jpar.hooks``) or the notebook layer; the API reaches this runtime only through
``jpar.backends.native``.
"""
