"""`chaosgym convert-checkpoint RUN`: a run folder of chaosgym 0.1 (pickled checkpoints) converted to
this version's files, for a folder you trust.

chaosgym 0.1 wrote checkpoints with pickle, which runs whatever code a file holds when it is read;
this version reads only arrays, tensors and JSON, and refuses those files. This command is the
one place that still unpickles: run it only on run folders you wrote yourself (or got from someone
you trust), once. It converts, in place, with the old files kept beside as `*.v0.1`:

* a `chaosgym train` run (config.json of 0.1's schema, checkpoint.pkl and checkpoint.prev.pkl):
  the config to this version's (the agent's own settings, `chaosgym.agents.settings`), each
  checkpoint's arrays into the structure this version's agent builds (same arrays, same order);
* an SB3 run (checkpoint.zip with pickled members): the model and its continuation re-saved as
  tensors and JSON;
* a `chaosgym reproduce` group (poles*-*/checkpoint.pkl): its program state as `.npz`.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import pickle
import zipfile
from pathlib import Path

import jax
import numpy as np

from chaosgym import flags
from chaosgym.agents import checkpoints, loop
from chaosgym.agents.config import TrainConfig, for_task
from chaosgym.agents.registry import AGENTS
from chaosgym.agents.run import Run
from chaosgym.files import write_atomic
from chaosgym.validation import UserError

OLD = ".v0.1"


def config_from_v01(saved: dict) -> TrainConfig:
    """This version's config of a chaosgym 0.1 `TrainConfig`: the shared settings it had, mapped
    onto the agent's own (a carried agent's envs were --batch-size, its window --horizon)."""
    agent, spec = saved["agent"], AGENTS[saved["agent"]]
    e = dict(saved.get("estimator") or {})
    changes: dict = {}
    if spec.kind == "estimator":
        changes = {"batch_size": saved["batch_size"], "learning_rate": saved["learning_rate"],
                   "hidden": tuple(saved["hidden"]), "policy": saved["policy"],
                   **{f"estimator.{k}": v for k, v in e.items() if k != "name"}}
    elif spec.kind == "carried":
        changes = {"num_envs": saved["batch_size"], "window": e["horizon"], "learning_rate": saved["learning_rate"],
                   "hidden": tuple(saved["hidden"])}
        fields = spec.settings_class().__dataclass_fields__
        if "critic_learning_rate" in fields:  # 0.1's critics stepped at the actor's rate
            changes["critic_learning_rate"] = saved["learning_rate"]
        if "min_window" in fields:
            changes["min_window"] = min(8, e["horizon"])
    elif spec.kind == "sb3":
        sb3 = dict(saved.get("sb3") or {})
        known = {path for path in AGENTS[agent].settings_class().__dataclass_fields__}
        net = (sb3.pop("policy_kwargs", {}) or {}).get("net_arch")
        changes = {k: v for k, v in sb3.items() if k in known}
        if net:
            changes["hidden"] = tuple(net)
        if set(sb3) - known:
            changes["extra"] = {k: v for k, v in sb3.items() if k not in known}
        changes["device"] = "cpu"  # 0.1 pinned SB3 to the CPU
    run = {k: saved[k] for k in ("seed", "eval_episodes", "eval_seed", "task_kwargs", "env_steps") if k in saved}
    if spec.budget == "updates":
        run |= {k: saved[k] for k in ("updates", "eval_every", "checkpoint_every")}
    config = for_task(saved["task"], agent, **{k: v for k, v in run.items() if v is not None}, **changes)
    # a preset of this version is not what 0.1 ran: every setting comes from the saved config or the defaults
    return TrainConfig(**{**{k: getattr(config, k) for k in ("task", "agent", "task_kwargs", "seed", "updates",
                                                              "env_steps", "eval_every", "eval_episodes", "eval_seed",
                                                              "checkpoint_every")},
                          "settings": flags.build(AGENTS[agent].settings_class(), changes)})


def _refill(old_tree, template):
    """`template`'s structure filled with `old_tree`'s arrays in order (they must match in count and shape)."""
    old = jax.tree.leaves(old_tree)
    new, treedef = jax.tree.flatten(template)
    if len(old) != len(new) or any(np.shape(a) != tuple(b.shape) for a, b in zip(old, new)):
        raise UserError("the checkpoint's arrays do not fit this version's agent (another network or optimiser); "
                        "it cannot be converted")
    return jax.tree.unflatten(treedef, [np.asarray(a) for a in old])


def convert_train_run(folder: Path) -> list[str]:
    saved = json.loads((folder / "config.json").read_text())
    config = config_from_v01(saved)
    done = []
    for name in ("checkpoint.pkl", "checkpoint.prev.pkl"):
        path = folder / name
        if not path.exists():
            continue
        old = pickle.loads(path.read_bytes())  # noqa: S301 (the user vouched for the folder)
        core = loop.core_of(config)
        params, opt_state = jax.eval_shape(lambda: core.init(jax.random.key(0)))
        progress = {**{k: old.get(k, 0.0) for k in loop.PROGRESS}, "params": _refill(old["params"], params),
                    "opt_state": _refill(old["opt_state"], opt_state)}
        target = path.with_name(name.replace(".pkl", ".npz"))
        write_atomic(target, loop.encode_checkpoint(config, progress))
        path.rename(path.with_name(name + OLD))
        done.append(f"{name} -> {target.name}")
    return done


def convert_sb3_run(folder: Path) -> list[str]:
    sb3 = importlib.import_module("chaosgym.agents.sb3")  # torch and SB3 only for an SB3 run
    saved = json.loads((folder / "config.json").read_text())
    config = config_from_v01(saved)
    done = []
    for name in ("checkpoint.zip", "checkpoint.prev.zip"):
        path = folder / name
        if not path.exists():
            continue
        with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as z:
            if "progress.json" not in z.namelist() or "model.zip" not in z.namelist():
                continue  # this version's already
            progress = json.loads(z.read("progress.json"))
            venv = sb3.VecMonitor(sb3.make_compiled_vec_env(config.task, config.task_kwargs, config.settings.num_envs,
                                                        config.seed))
            env = venv
            if "vecnormalize.pkl" in z.namelist():
                env = pickle.loads(z.read("vecnormalize.pkl"))  # noqa: S301
                env.set_venv(venv)
            model = sb3.ALGORITHMS[config.agent].load(io.BytesIO(z.read("model.zip")), env=env, device="cpu")
            if "replay_buffer.pkl" in z.namelist():
                model.load_replay_buffer(io.BytesIO(z.read("replay_buffer.pkl")))
            if "continuation.pkl" in z.namelist():
                state = pickle.loads(z.read("continuation.pkl"))  # noqa: S301
                model.get_env().unwrapped.set_state(state["vec_env"])
                for key, value in state["last"].items():
                    setattr(model, key, value)
        keep = {k: progress[k] for k in ("env_steps", "wall_time", "compile_time") if k in progress}
        path.rename(path.with_name(name + OLD))
        write_atomic(path, sb3.encode_checkpoint(config, model, keep))
        done.append(f"{name} re-saved")
    return done


def convert_group(folder: Path) -> list[str]:
    done = []
    for name in ("checkpoint.pkl", "checkpoint.prev.pkl"):
        path = folder / name
        if path.exists():
            old = pickle.loads(path.read_bytes())  # noqa: S301
            target = path.with_name(name.replace(".pkl", ".npz"))
            write_atomic(target, checkpoints.encode(old["state"], {"epoch": int(old["epoch"]),
                                                                   "compile_time": float(old.get("compile_time", 0.0))}))
            path.rename(path.with_name(name + OLD))
            done.append(f"{name} -> {target.name}")
    return done


def run(args: argparse.Namespace) -> int:
    folder = args.run
    if not (folder / "config.json").exists():
        raise UserError(f"{folder} is not a run folder (no config.json)")
    saved = json.loads((folder / "config.json").read_text())
    if saved.get("experiment") == "stable-bptt":
        done = convert_group(folder)
    else:
        if "settings" in saved:
            raise UserError(f"{folder} is a run of this version already")
        kind = AGENTS[saved["agent"]].kind
        done = convert_sb3_run(folder) if kind == "sb3" else convert_train_run(folder)
        (folder / "config.json").rename(folder / ("config.json" + OLD))
        write_atomic(folder / "config.json", json.dumps(config_from_v01(saved).to_json(), indent=2).encode())
        done.append("config.json -> this version's schema")
    print(f"converted {folder}: {'; '.join(done) or 'nothing to convert'} (the old files kept as *{OLD})")
    return 0
