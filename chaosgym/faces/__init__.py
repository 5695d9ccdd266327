"""The faces of a task that other libraries expect. They convert at the boundary and add no physics
of their own:

* `gym_env`: Gymnasium's single env (on MJX or on MuJoCo's C engine, `mujoco_backend`) and vector
  env, the entry points `gymnasium.make` and `gymnasium.make_vec` use;
* `device_vector`: a vector env whose arrays stay on the device, for agents in JAX or PyTorch;
* `vector`: the device programs every batched face runs (the SB3 `VecEnv` in `chaosgym.agents` too);
* `seeding`, `boundary` and `rendering`: where episodes' randomness comes from, what every face
  checks of its inputs, and pictures of states (frames, and MuJoCo's viewer window).
"""
