"""The run folder every agent and `reproduce` write: one `RunFolder` owns all of it.

    config.json         the run's config (`Run`: a `TrainConfig`, one schema for every agent;
                        `reproduce`'s group folders: the protocol and the group's settings)
    metrics.csv         one row per update (SB3: per log dump; `reproduce`: per run and epoch),
                        or metrics.csv.gz, a finished run's rows kept compressed (read only),
                        columns `columns`; a value not measured at that row is left empty. Rows are
                        appended whole (one write, undone on failure); a torn row left by a crash
                        is dropped on read, with a warning
    checkpoint.<ext>    the newest checkpoint (`.npz` of arrays and JSON for gradient agents and
                        `reproduce`, `.zip` of tensors and JSON for SB3; nothing in it runs code
                        when read), written whole or not at all; checkpoint.prev.<ext> is the one
                        before it, the fallback when the newest cannot be read
    .lock               held (flock) by the one process writing the folder

`RunFolder.open` refuses a folder that holds another run or files that are not a run's, unless the
caller resumes that very run; it validates the checkpoint before it changes anything in the folder.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import gzip
import io
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaosgym.agents.config import BUDGET_FIELDS, TrainConfig
from chaosgym.files import write_atomic
from chaosgym.validation import UserError

# every run's columns; an agent's own diagnostics follow (`Agent.metrics`: an estimator's spec's, a
# carried agent's)
METRIC_COLUMNS = ["update", "env_steps", "wall_time", "loss", "eval_score", "eval_objective",
                  "grad_norm", "skipped_updates"]
RUN_FILES = {"config.json", "metrics.csv", "metrics.csv.gz", ".lock", "checkpoint.npz", "checkpoint.prev.npz",
             "checkpoint.zip", "checkpoint.prev.zip", "episode.gif",
             "checkpoint.pkl", "checkpoint.prev.pkl"}  # pickles of chaosgym < 0.2: refused when read


class CheckpointError(UserError):
    """A checkpoint that cannot be read, or that belongs to another config."""


def _is_run_file(name: str) -> bool:
    # write_atomic's temporary files (tmp*) are left behind only by a kill in mid-write; *.v0.1 are
    # the files `chaosgym convert-checkpoint` converted, kept
    return name in RUN_FILES or name.startswith("tmp") or name.endswith(".v0.1")


def _differences(saved: dict, new: dict, keys: list[str]) -> str:
    """The differing settings, nested ones by their own name: "learning_rate (saved 0.001, now 0.002)"."""
    parts = []
    for key in keys:
        old, now = saved.get(key), new.get(key)
        if isinstance(old, dict) and isinstance(now, dict):
            inner = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
            parts += [f"{k} (saved {old.get(k)!r}, now {now.get(k)!r})" for k in inner]
        else:
            parts.append(f"{key} (saved {old!r}, now {now!r})")
    return ", ".join(parts)


class RunFolder:
    """A run folder: its config, metrics and checkpoints. Open one with `open` to write (it holds
    the folder's lock until `close`), or `cls(folder)` to read one.

    A subclass says what its config is (`decode_config`, `encode_config`), which config fields a
    resumed run may change (`budget_fields`), its metric `columns` and its checkpoint's file name."""

    columns: list[str] = METRIC_COLUMNS
    required: tuple[str, ...] = ()  # the metrics columns a resumed run reads back
    budget_fields: tuple[str, ...] = ()
    checkpoint_suffix = ".npz"

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self._lock, self._newest_unreadable = None, False
        self.config = self._read_config()

    @classmethod
    def decode_config(cls, saved: dict) -> Any:
        return saved

    @classmethod
    def encode_config(cls, config: Any) -> dict:
        return config

    def _read_config(self) -> Any:
        path = self.folder / "config.json"
        if not path.exists():
            return None
        try:
            return self.decode_config(json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise UserError(f"{path} is not the config of a chaosgym run: {error}") from None
        except OSError as error:
            raise UserError(f"cannot read {path}: {error.strerror or error}") from None

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / f"checkpoint{self.checkpoint_suffix}"

    @property
    def previous_checkpoint_path(self) -> Path:
        path = self.checkpoint_path
        return path.with_name(f"checkpoint.prev{path.suffix}")

    # ---- opening ----------------------------------------------------------------------------

    @classmethod
    def open(cls, folder: Path | str, config: Any, resume: bool,
             decode: Callable[[bytes], Any]) -> tuple[RunFolder, Any]:
        """Open `folder` to write `config`'s run: `(run, checkpoint)`, the checkpoint decoded by
        `decode` (None for a new run). A resumed run may differ from the saved config only in its
        budget (`budget_fields`); the saved config is then updated to the new budget."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        foreign = sorted(p.name for p in folder.iterdir() if not _is_run_file(p.name))
        if foreign:
            raise FileExistsError(errno.EEXIST, f"it holds files that are not a chaosgym run's ({', '.join(foreign[:5])}); "
                                  "choose an empty or new folder", str(folder))
        run = cls.__new__(cls)
        run.folder, run._lock, run._newest_unreadable = folder, None, False
        run._take_lock()
        try:
            run.config = run._read_config()
            checkpoint = None
            if run.config is None and run._has_run_files():
                # a run whose config.json is gone: starting afresh would overwrite its checkpoints
                raise FileExistsError(errno.EEXIST, "it holds a run's metrics or checkpoints but no config.json; "
                                      "restore it, or choose another folder", str(folder))
            if run.config is not None:
                if not resume:
                    raise FileExistsError(errno.EEXIST, "it already holds a run; pass --resume (resume=True) to "
                                          "continue it, or choose another folder", str(folder))
                saved, new = cls.encode_config(run.config), cls.encode_config(config)
                mismatched = sorted(k for k in set(new) | set(saved)
                                    if k not in cls.budget_fields and saved.get(k) != new.get(k))
                if mismatched:
                    raise UserError(f"cannot resume {folder}: its config differs in "
                                    f"{_differences(saved, new, mismatched)}")
                run.config = config  # checks that `config` names the same kind of checkpoint
                if run.checkpoint_path.exists() or run.previous_checkpoint_path.exists():
                    checkpoint = run.load_checkpoint(decode)  # else it stopped before its first: start again
            run.config = config
            return run, checkpoint
        except BaseException:
            run.close()
            raise

    def _has_run_files(self) -> bool:
        return any((self.folder / name).exists() for name in RUN_FILES - {"config.json", ".lock"})

    def _take_lock(self) -> None:
        self._lock = open(self.folder / ".lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            raise FileExistsError(errno.EBUSY, "it is being written by another process (it holds its .lock); wait "
                                  "for it or choose another folder", str(self.folder)) from None

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- config and metrics -------------------------------------------------------------------

    def start(self, first_row: dict | None = None) -> None:
        """Write a new run's config.json and metrics.csv (header, then `first_row` if given)."""
        write_atomic(self.folder / "config.json", json.dumps(self.encode_config(self.config), indent=2).encode())
        self._write_metrics([first_row] if first_row else [])

    def resume_at(self, keep: Callable[[dict], bool], counter: str | None = None) -> None:
        """Save the (re-budgeted) config and cut metrics.csv back to the rows `keep` accepts.

        The rows kept must be the run's own record: its header must hold the columns this run's
        progress is read from (`required`, and `counter`), and with a `counter` column (a gradient
        run's `update`) every value from 0 on must appear once, in order. A file edited otherwise (a
        row deleted or repeated, a header renamed) is refused, naming what differs, before anything
        is written. Other columns may differ (a run of an older chaosgym): the rows are rewritten
        in this run's columns."""
        header = self._header()
        missing = sorted({*self.required, *([counter] if counter else [])} - set(header or self.required))
        if missing:
            raise UserError(f"{self.folder / 'metrics.csv'}: its header lacks the column(s) {', '.join(missing)} "
                            "(renamed or deleted?); restore the file or start a new run")
        rows = [r for r in self.metrics() if keep(r)]
        if counter is not None:
            found = [r.get(counter, "") for r in rows]
            if found != [str(i) for i in range(len(rows))]:
                first = next(i for i, v in enumerate(found + [None]) if v != str(i))
                raise UserError(f"{self.folder / 'metrics.csv'}: its {counter} column should count 0, 1, 2, ... up "
                                f"to the checkpoint, but row {first + 1} has {found[first]!r}: a row was deleted, "
                                "repeated or edited; restore the file or start a new run")
        write_atomic(self.folder / "config.json", json.dumps(self.encode_config(self.config), indent=2).encode())
        self._write_metrics(rows)

    def _header(self) -> list[str] | None:
        path = self.folder / "metrics.csv"
        if not path.exists():
            return None
        return next(csv.reader(_metrics_text(path).splitlines()[:1]), None)

    def metrics(self) -> list[dict[str, str]]:
        """Every whole row of metrics.csv. A row that a crash tore (no line end, or too few or too
        many fields) is left out, with a warning; `resume_at` then drops it from the file."""
        path = self.folder / "metrics.csv"
        if not path.exists() and path.with_suffix(".csv.gz").exists():  # a finished run kept as an archive
            path = path.with_suffix(".csv.gz")
        text = _metrics_text(path)
        lines = text.splitlines(keepends=True)
        if not lines:
            return []
        header = next(csv.reader([lines[0]]))
        rows, torn = [], []
        for number, line in enumerate(lines[1:], start=2):
            fields = next(csv.reader([line]), [])
            if not line.endswith("\n") or len(fields) != len(header):
                torn.append(number)
                continue
            rows.append(dict(zip(header, fields)))
        if torn:
            warnings.warn(f"{path}: left out {len(torn)} torn row(s) (line {', '.join(map(str, torn[:5]))}), "
                          "as a crash in mid-write leaves them", stacklevel=2)
        return rows

    def _write_metrics(self, rows: list[dict]) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(self.folder / "metrics.csv", text.getvalue().encode())

    def append_metrics(self, rows: list[dict]) -> None:
        """Append rows whole; columns a row lacks are left empty, keys not in `columns` dropped.

        The rows go out in one write to the end of the file; a write that fails part-way (a full
        disk, a file-size limit) is cut back off, so the file never keeps part of a row."""
        text = io.StringIO()
        csv.DictWriter(text, self.columns, extrasaction="ignore", lineterminator="\n").writerows(rows)
        data = text.getvalue().encode()
        fd = os.open(self.folder / "metrics.csv", os.O_WRONLY | os.O_APPEND)
        try:
            size = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(errno.ENOSPC, f"a short write ({written} of {len(data)} bytes; is the disk full?)",
                                  str(self.folder / "metrics.csv"))
            except OSError as error:
                os.ftruncate(fd, size)
                if error.filename is None:  # the command shows an OSError naming its file as one line
                    raise OSError(error.errno, error.strerror or str(error), str(self.folder / "metrics.csv")) from None
                raise
        finally:
            os.close(fd)

    def evaluated_metrics(self) -> list[dict[str, str]]:
        """The rows that carry an evaluation."""
        return [r for r in self.metrics() if r.get("eval_score") not in (None, "", "nan")]

    # ---- checkpoints ----------------------------------------------------------------------------

    def save_checkpoint(self, payload: bytes) -> None:
        """Write the newest checkpoint atomically; the one it replaces becomes the previous one
        (unless it was unreadable: the readable previous one is kept)."""
        if self.checkpoint_path.exists() and not self._newest_unreadable:
            os.replace(self.checkpoint_path, self.previous_checkpoint_path)
        write_atomic(self.checkpoint_path, payload)
        self._newest_unreadable = False

    def load_checkpoint(self, decode: Callable[[bytes], Any]) -> Any:
        """The newest checkpoint that `decode` accepts (it raises on anything else); falls back to
        the previous one, with a warning naming the unreadable file."""
        errors = []
        for path in (self.checkpoint_path, self.previous_checkpoint_path):
            if not path.exists():
                continue
            try:
                checkpoint = decode(path.read_bytes())
            except Exception as error:  # noqa: BLE001 (pickle and zip raise many kinds)
                errors.append(f"{path}: {type(error).__name__}: {error}")
                continue
            self._newest_unreadable = bool(errors)
            if errors:
                warnings.warn(f"could not read {errors[0]}; resuming from the previous checkpoint {path}",
                              stacklevel=2)
            return checkpoint
        if not errors:
            raise CheckpointError(f"{self.folder} has no checkpoint ({self.checkpoint_path.name}) to resume from")
        raise CheckpointError("cannot read the checkpoint " + "; nor ".join(errors))


class Run(RunFolder):
    """The run folder of `chaosgym train` (every agent, gradient-based or SB3): a `TrainConfig`,
    `METRIC_COLUMNS` then the agent's own, the checkpoint named as the agent says (`.npz`, `.zip` for SB3)."""

    budget_fields = BUDGET_FIELDS
    required = ("env_steps", "wall_time", "eval_score", "eval_objective")

    @classmethod
    def decode_config(cls, saved: dict) -> TrainConfig:
        return TrainConfig.from_json(saved)

    @classmethod
    def encode_config(cls, config: TrainConfig) -> dict:
        return config.to_json()

    @property
    def checkpoint_suffix(self) -> str:
        return self.config.spec.checkpoint_suffix

    @property
    def columns(self) -> list[str]:
        """The common columns, then the agent's own diagnostics (`Agent.metrics`)."""
        return METRIC_COLUMNS + [c for c in self.config.spec.metrics if c not in METRIC_COLUMNS]

    def policy(self) -> Callable:
        """The deterministic numpy policy `obs -> action` of the run's newest readable checkpoint,
        from its agent's trainer (`chaosgym.agents.AGENTS`)."""
        if self.config is None:
            raise UserError(f"{self.folder} is not a chaosgym run folder (it has no config.json)")
        return self.config.spec.load().policy(self)


def next_timed_evaluation(wall_time: float, time_budget: float | None) -> float:
    """The training wall-clock at which a run under `time_budget` evaluates next: every tenth of
    the budget (a budget may end long before the run's env steps or updates do); never without one."""
    if time_budget is None:
        return math.inf
    tenth = time_budget / 10
    return (wall_time // tenth + 1) * tenth


def _metrics_text(path: Path) -> str:
    """A run's metrics.csv (or its .csv.gz archive) as text; a UserError naming it where it is not text."""
    try:
        data = path.read_bytes()
        return (gzip.decompress(data) if path.suffix == ".gz" else data).decode()
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as error:
        raise UserError(f"{path} is not the metrics.csv of a chaosgym run ({type(error).__name__}); "
                        "it was not written by chaosgym: move it away to start the run again") from None
