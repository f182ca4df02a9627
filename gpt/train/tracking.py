"""Experiment tracking for a training run: TensorBoard, Weights & Biases, metrics.jsonl and a loss-curve PNG,
all fed by one call. (Named tracking.py, not logging.py, so it never shadows Python's logging module.)

    tracker = Tracker("runs/tiny", config=cfg.to_dict(), run_name="tiny", wandb_mode="offline")
    tracker.log(step, {"train/loss": 4.2, "train/lr": 3e-4})
    tracker.log_text(step, "samples/text", "ROMEO: ...")
    tracker.plot_losses()          # runs/tiny/loss.png
    tracker.close()

TensorBoard events are written with TensorBoard's own record format and protobufs (tensorboard.summary.writer's
RecordWriter) straight to a local file, so TensorFlow is never imported, even where it is installed
(torch.utils.tensorboard would import it: seconds of start-up and a screen of log lines).
W&B: mode "auto" goes online when an API key is configured (WANDB_API_KEY or `wandb login`), else offline;
an offline run lands in <run_dir>/wandb/offline-run-*/ and uploads later with `wandb sync <that dir>`.
Only rank 0 of a DDP run creates a Tracker.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from gpt.utils import atomic_write_text

METRICS_FILE = "metrics.jsonl"
LOSS_PNG = "loss.png"
WANDB_ID_FILE = "wandb_run_id"


class TensorBoardWriter:
    """Scalars and text into a TensorBoard event file (readable by TensorBoard and its EventAccumulator)."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.summary.writer.record_writer import RecordWriter

        log_dir = Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.0"
        self._writer = RecordWriter(open(self.path, "wb"))
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if purge_step is not None:
            # A resumed run: TensorBoard drops earlier events at steps >= purge_step (logged after the checkpoint
            # by the interrupted process), as torch's SummaryWriter(purge_step=...) does.
            self._write(Event(wall_time=time.time(), step=purge_step, session_log=SessionLog(status=SessionLog.START)))

    def _write(self, event) -> None:
        self._writer.write(event.SerializeToString())
        self._writer.flush()

    def add_scalars(self, step: int, values: dict[str, float]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()])
        self._write(Event(wall_time=time.time(), step=step, summary=summary))

    def add_text(self, step: int, tag: str, text: str) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.compat.proto.tensor_pb2 import TensorProto
        from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto

        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
        tensor = TensorProto(
            dtype="DT_STRING",
            string_val=[text.encode("utf-8")],
            tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]),
        )
        summary = Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=tensor)])
        self._write(Event(wall_time=time.time(), step=step, summary=summary))

    def close(self) -> None:
        self._writer.close()


def read_tensorboard_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in run_dir's event files, {tag: [(step, value), ...]}, as TensorBoard shows them: read
    by TensorBoard's own EventAccumulator, which merges the files of an interrupted and a resumed process and
    honours the purge records a resumed run writes. Values are float32, as stored.

    TensorBoard imports TensorFlow to read a file when TensorFlow is installed (seconds, and a screen of log lines);
    the module `tensorboard.compat.notf` is its documented switch to its own TensorFlow-free reader, so we set it.
    """
    import sys
    import types

    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})  # 0: keep every point, not a sample
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def sample_text(enc, ids: list[int]) -> str:
    """Token ids → text that is valid UTF-8 and hides nothing: bytes that do not form UTF-8 show as \\xNN escapes
    (never as lossy U+FFFD replacements); a character cut off at the end of the sample is left out."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
    return "".join(decoder.decode(enc.decode_single_token_bytes(i)) for i in ids)  # no final=True: drop a cut tail


def wandb_has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """'auto' → WANDB_MODE from the environment if set, else online with an API key, else offline."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled"):
        return env
    return "online" if wandb_has_api_key() else "offline"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, oldest first. What a crash can leave is skipped, not an error: a partial
    last line (`{"step": 3, "train/lo`), a line of NUL bytes (a file extended but never written), any line that
    is not a JSON object with an integer "step"."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
    return records


def read_wandb_run_id(path: str | Path) -> str | None:
    """The W&B run id saved in a run directory, or None when the file is missing, empty or garbled (a crash while
    writing it): the resumed run then starts a new W&B run instead of failing."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""
    return text if re.fullmatch(r"[0-9a-z]{1,64}", text) else None


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


class Tracker:
    """One place that every metric goes through: TensorBoard + W&B + metrics.jsonl, and the loss-curve PNG.

    resume_step: set when resuming from the checkpoint at that step; records logged after it by the interrupted
    run are dropped from metrics.jsonl and TensorBoard, and the W&B run with the same id continues.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        *,
        run_name: str,
        tensorboard: bool = True,
        wandb_mode: str = "auto",
        wandb_project: str = "gpt2-from-scratch",
        resume_step: int | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.records: list[dict[str, Any]] = []
        if resume_step is not None and self.metrics_path.is_file():
            self.records = [r for r in read_metrics(self.metrics_path) if r["step"] <= resume_step]
            atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in self.records))
        self._metrics_file = open(self.metrics_path, "a", encoding="utf-8")
        if self._metrics_file.tell() and not _ends_with_newline(self.metrics_path):  # a crash's partial last line
            self._metrics_file.write("\n")  # ends it, so the next record is a line of its own
        purge = resume_step + 1 if resume_step is not None else None
        self.tb = TensorBoardWriter(self.run_dir, purge_step=purge) if tensorboard else None
        self.wandb_run = None
        self.wandb_mode = resolve_wandb_mode(wandb_mode)
        if self.wandb_mode != "disabled":
            self.wandb_run = self._init_wandb(config, run_name, wandb_project, resuming=resume_step is not None)

    def _init_wandb(self, config, run_name, project, resuming: bool):
        import wandb

        id_file = self.run_dir / WANDB_ID_FILE
        run_id = (read_wandb_run_id(id_file) if resuming else None) or uuid.uuid4().hex[:12]
        atomic_write_text(id_file, run_id + "\n")
        kwargs = dict(project=project, name=run_name, id=run_id, resume="allow", config=config, dir=str(self.run_dir),
                      settings=wandb.Settings(console="off", silent=True))  # fmt: skip
        try:
            return wandb.init(mode=self.wandb_mode, **kwargs)
        except Exception as e:  # e.g. online with a key but no network: log offline rather than lose the run
            if self.wandb_mode != "online":
                raise
            print(f"warning: W&B online failed ({e}); logging offline instead (upload later with `wandb sync`)")
            self.wandb_mode = "offline"
            return wandb.init(mode="offline", **kwargs)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}
        self._append({"step": step, **metrics})
        if self.tb is not None:
            self.tb.add_scalars(step, metrics)
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)

    def log_text(self, step: int, tag: str, text: str) -> None:
        self._append({"step": step, tag: text})
        if self.tb is not None:
            self.tb.add_text(step, tag, text)
        if self.wandb_run is not None:
            import wandb

            self.wandb_run.log({tag: wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step=step)

    def _append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._metrics_file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
        self._metrics_file.flush()

    def plot_losses(self) -> Path:
        """Train and validation loss against step → <run_dir>/loss.png (written via a temp file)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure  # not pyplot: no global backend switch in a notebook

        def series(key):
            pts = [(r["step"], r[key]) for r in self.records if key in r and math.isfinite(r[key])]
            return [p[0] for p in pts], [p[1] for p in pts]

        fig = Figure(figsize=(7, 4), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        steps, train = series("train/loss")
        if steps:
            ax.plot(steps, train, lw=0.8, alpha=0.6, label="train (per step)")
        steps, val = series("val/loss")
        if steps:
            ax.plot(steps, val, "o-", ms=3, label="validation")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("cross-entropy loss (nats/token)")
        ax.set_title(self.run_dir.name)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = self.run_dir / LOSS_PNG
        tmp = path.with_name(f".{LOSS_PNG}.tmp.png")
        fig.savefig(tmp)
        os.replace(tmp, path)
        return path

    def close(self) -> None:
        self._metrics_file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
