"""Read back what TensorBoard and the TensorFlow profiler wrote, without a server.

TensorBoard is a web app over files: ``keras.callbacks.TensorBoard`` (or
``tf.summary``) appends protocol-buffer records to ``events.out.tfevents.*``
files, one folder per run (``train/``, ``validation/``, ...), and the
profiler writes an ``XSpace`` protocol buffer (``*.xplane.pb``) under
``<run>/plugins/profile/<timestamp>/``. These functions read both offline, so
a notebook can prove that the logging worked and summarise a trace:

- :func:`new_run_dir`: a fresh, never-shared folder for one run's logs;
- :func:`read_scalars`: every scalar of every run, as ``(step, value)`` lists;
- :func:`trace_files`: the profiler's files under a log folder;
- :func:`op_times`: total time per TensorFlow op type in one trace (the
  "top ops" table of TensorBoard's profile plugin, for host CPU ops);
- :func:`event_durations`: durations of named trace events, e.g. Keras'
  ``"Profiled batch"`` (one per profiled training step).

Introduced in chapter 7.

Example:
    >>> scalars = read_scalars("logs/ch07")  # doctest: +SKIP
    >>> scalars["train"]["batch_loss"][:2]  # doctest: +SKIP
    [(1, 8.01), (2, 8.00)]
"""

from __future__ import annotations

import collections
import re
import tempfile
import time
from pathlib import Path

from llmft import paths

# "scope/name:OpType": one op executed by TensorFlow's executor. Wrappers such
# as "ExecutorState::Process" contain "::" and are not ops.
_OP_EVENT = re.compile(r"^(?P<name>[^:]+):(?P<type>[A-Za-z_][A-Za-z0-9_]*)$")
GROUPS = ("type", "name")


def _folder(logdir) -> Path:
    path = Path(logdir)
    if not path.is_dir():
        raise ValueError(f"logdir must be an existing folder; got {str(logdir)!r}")
    return path


def new_run_dir(name: str, *, root=None) -> Path:
    """Create and return an empty log folder for one run: ``<root>/<name>/<time>-<suffix>``.

    Each call gets its own folder (``tempfile.mkdtemp`` picks the random
    suffix and creates it atomically), so two runs of the same notebook at the
    same time, such as the nbval and papermill runs of ``make test``, never
    write into or delete each other's logs. ``tensorboard --logdir <root>``
    lists every run under ``<name>/`` side by side; delete old ones by hand.

    Args:
        name: the group of runs, e.g. ``"ch07-cpu"``; one folder name
            (letters, digits, ``.``, ``_``, ``-``).
        root: where the groups live (default ``$LLMFT_HOME/tensorboard``).

    Example:
        >>> run = new_run_dir("demo", root=tmp)  # doctest: +SKIP
        >>> run.relative_to(tmp).as_posix()  # doctest: +SKIP
        'demo/20261201-183000-k2j4x8a1'
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name) or set(name) == {"."}:
        raise ValueError(f"name must be one folder name of letters, digits, '.', '_' or '-'; got {name!r}")
    parent = (Path(root) if root is not None else paths.llmft_home() / "tensorboard") / name
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=parent))


def read_scalars(logdir) -> dict:
    """All scalar summaries under ``logdir``.

    Args:
        logdir: the folder given to ``keras.callbacks.TensorBoard`` or
            ``tf.summary.create_file_writer`` (or a parent of several).

    Returns:
        ``{run: {tag: [(step, value), ...]}}`` sorted by step, where ``run``
        is the event file's folder relative to ``logdir`` (``"train"``,
        ``"validation"``, ``"."`` ...). Scalars written by TF 2 (tensors with
        the ``scalars`` plugin) and by TF 1 (``simple_value``) are both read.
    """
    import tensorflow as tf
    from tensorflow.core.util import event_pb2

    root = _folder(logdir)
    runs: dict = {}
    for path in sorted(root.rglob("events.out.tfevents.*")):
        run = path.parent.relative_to(root).as_posix()
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = float(value.simple_value)
                elif value.metadata.plugin_data.plugin_name == "scalars" and value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                else:
                    continue  # graphs, histograms, text ...
                runs.setdefault(run, {}).setdefault(value.tag, []).append((int(event.step), number))
    for tags in runs.values():
        for tag in tags:
            tags[tag].sort(key=lambda pair: pair[0])
    return runs


def trace_files(logdir) -> list[Path]:
    """The profiler's ``*.xplane.pb`` files under ``logdir``, oldest first."""
    return sorted(_folder(logdir).rglob("*.xplane.pb"))


def _space(xplane_path):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = Path(xplane_path)
    if not path.is_file() or not path.name.endswith(".xplane.pb"):
        raise ValueError(f"xplane_path must be an existing *.xplane.pb file; got {str(xplane_path)!r}")
    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    return space


def op_times(xplane_path, *, group_by="type", top=10) -> list[dict]:
    """Where the time went: TensorFlow ops in one trace, by total duration.

    Sums the durations of the op events on the host's executor threads
    (lines named ``tf_Compute...`` in the ``/host:CPU`` plane). On a GPU the
    kernels themselves run on the device and are not counted here; open the
    trace in TensorBoard's profile plugin for those.

    Args:
        xplane_path: a file from :func:`trace_files`.
        group_by: ``"type"`` (e.g. ``_MklBatchMatMulV2``) or ``"name"``
            (the op's full name, e.g. ``gpt/block_0/attn/qkv/MatMul``).
        top: how many rows to return (the rest are summed in no row).

    Returns:
        rows ``{"op", "calls", "ms", "share"}``, largest first; ``share``
        is the fraction of the total op time in the trace.
    """
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {GROUPS}; got {group_by!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer; got {top!r}")
    space = _space(xplane_path)
    total_ps, calls = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                match = _OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                if match:
                    key = match.group(group_by)
                    total_ps[key] += event.duration_ps
                    calls[key] += 1
    everything = sum(total_ps.values())
    if not everything:
        raise ValueError(f"xplane_path {str(xplane_path)!r} holds no TensorFlow op events on the host CPU")
    return [{"op": op, "calls": calls[op], "ms": ps / 1e9, "share": ps / everything}
            for op, ps in total_ps.most_common(top)]


def event_durations(xplane_path, name) -> list[float]:
    """Durations in milliseconds of every trace event called ``name``, in time order.

    Example: ``event_durations(path, "Profiled batch")`` gives the wall time of
    each training step that ``keras.callbacks.TensorBoard(profile_batch=...)``
    traced.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string; got {name!r}")
    found = []
    for plane in _space(xplane_path).planes:
        ids = {i for i, meta in plane.event_metadata.items() if meta.name == name}
        for line in plane.lines:
            for event in line.events:
                if event.metadata_id in ids:
                    found.append((line.timestamp_ns * 1000 + event.offset_ps, event.duration_ps / 1e9))
    return [ms for _, ms in sorted(found)]
